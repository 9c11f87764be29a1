#!/usr/bin/python3
"""Conformance of the viperkv emulator's certificates with the Azure SDK for Python.

Runs azure-keyvault-certificates and azure-keyvault-secrets (Debian: apt-get install
python3-azure) against a running standalone emulator through its proxy, with the
production URL https://certvault.vault.azure.net and the SDK's challenge resource
verification on. The emulator must run the seed of cmd/viperkv/conformance_test.go
(certificatesSeed, also in docs/emulator.md): a vault "certvault" with the seeded
certificate "seeded-web", the identities "certadmin" (Key Vault Certificates Officer and
Key Vault Secrets User), "certofficer" (Key Vault Certificates Officer only) and
"noaccess" (no role), and the system-assigned identity as Key Vault Certificate User.
The SDK gets no emulator-specific option: only the variables the emulator prints
(HTTPS_PROXY, HTTP_PROXY, REQUESTS_CA_BUNDLE) and the App Service managed identity
variables from the info file.

    python3 testdata/conformance/certificates.py --info FILE

It prints one line per check (PASS name / FAIL name: reason), never a private key, a
password or a secret value, and a last line "N passed, M failed"; it exits 0 only if
every check passed. The certificates, keys, PEM bundles and PFX files it imports, and
its parsing of what the emulator returns, use the cryptography module
(python3-cryptography), which azure-identity itself imports.
"""

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import sys
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContentType,
    CertificatePolicy,
    CertificatePolicyAction,
    KeyCurveName,
    KeyType,
    LifetimeAction,
    WellKnownIssuerNames,
)
from azure.keyvault.secrets import SecretClient

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VAULT = "https://certvault.vault.azure.net"
SEEDED = "seeded-web"

# The variables that select a managed identity source or a workload identity.
IDENTITY_VARS = (
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)

# How often the SDK's pollers ask; their defaults (5 s for create, 2 s for delete and
# recover) only make the run slower.
POLL = 0.25


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def error_of(exc):
    """The Key Vault error code and inner error code of an HttpResponseError."""
    try:
        body = json.loads(exc.response.text())
    except Exception:  # pylint: disable=broad-except
        return None, None
    err = body.get("error") or {}
    return err.get("code"), (err.get("innererror") or {}).get("code")


def expect_error(fn, status, code=None, inner=None, cls=HttpResponseError):
    try:
        fn()
    except HttpResponseError as exc:
        got_code, got_inner = error_of(exc)
        expect(isinstance(exc, cls), f"{type(exc).__name__}, want {cls.__name__}")
        expect(exc.status_code == status, f"status {exc.status_code}, want {status}")
        expect(code is None or got_code == code, f"code {got_code}, want {code}")
        expect(inner is None or got_inner == inner, f"inner error {got_inner}, want {inner}")
        return f"{status} {got_code}" + (f" ({got_inner})" if got_inner else "")
    raise CheckFailed(f"no error, want {status} {code or ''}")


def wait_until(fn, timeout=20, interval=0.25):
    """Calls fn until it stops raising a 409 (a deletion or purge completing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except ResourceExistsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def public_der(key):
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_public_der(cert):
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def thumbprint(der):
    """Key Vault's x5t as the Python SDK reports it: the SHA-1 of the DER certificate."""
    return hashlib.sha1(der).digest()


def dns_names(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def pem_blocks(text):
    """The PEM blocks of a linked secret, by type, in order."""
    return re.findall(r"-----BEGIN ([A-Z ]+)-----", text)


def pem_certificates(text):
    """The certificates of PEM text, in order (cryptography 38 has no load_pem_x509_certificates)."""
    marker = "-----BEGIN CERTIFICATE-----"
    return [x509.load_pem_x509_certificate((marker + b).encode()) for b in text.split(marker)[1:]]


def make_ca_and_leaf(cn, key_type="rsa"):
    """An issuing CA and a leaf it signed, with their keys: what a team imports."""
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Conformance Test CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    if key_type == "ec":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=20))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return ca, key, leaf


class Certificates:
    def __init__(self, info):
        self.info = info
        self.passed = 0
        self.failed = 0
        self.run_id = uuid.uuid4().hex[:8]
        # App Service style managed identity, as the emulator prints it.
        for k in IDENTITY_VARS:
            os.environ.pop(k, None)
        os.environ["IDENTITY_ENDPOINT"] = info["identity_endpoint"]
        os.environ["IDENTITY_HEADER"] = info["identity_header"]
        cred = ManagedIdentityCredential(client_id=info["identities"]["certadmin"]["client_id"])
        self.certs = CertificateClient(VAULT, cred)
        self.secrets = SecretClient(VAULT, cred)
        officer = ManagedIdentityCredential(client_id=info["identities"]["certofficer"]["client_id"])
        self.officer_certs = CertificateClient(VAULT, officer)
        self.officer_secrets = SecretClient(VAULT, officer)
        self.made = {}  # what the checks made, for the later checks

    def check(self, name, fn):
        try:
            detail = fn()
        except Exception as exc:  # pylint: disable=broad-except
            self.failed += 1
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(f"FAIL {name}: {type(exc).__name__}: {reason}", flush=True)
            if os.environ.get("CONFORMANCE_TRACE"):
                traceback.print_exc()
            return None
        self.passed += 1
        print(f"PASS {name}" + (f" ({detail})" if detail else ""), flush=True)
        return detail

    def name(self, base):
        return f"conf-{base}-{self.run_id}"

    def linked_secret(self, name, version, cer, want_ct):
        """Reads the certificate's linked secret and checks that it holds the certificate
        cer (DER) with its private key, in content type want_ct. Returns how many chain
        certificates follow it."""
        s = self.secrets.get_secret(name, version)
        p = s.properties
        expect(p.content_type == want_ct, f"linked secret content type {p.content_type}, want {want_ct}")
        expect(p.version == version, f"linked secret version {p.version}, want {version}")
        expect(p.managed is True, f"linked secret managed {p.managed}")
        expect(p.key_id == f"{VAULT}/keys/{name}/{version}", f"linked secret kid {p.key_id}")
        if want_ct == CertificateContentType.pkcs12:
            key, cert, chain = pkcs12.load_key_and_certificates(base64.b64decode(s.value), None)
            expect(cert is not None and key is not None, "the PKCS#12 file lacks the certificate or the key")
        else:
            blocks = pem_blocks(s.value)
            expect(blocks and blocks[0] == "PRIVATE KEY" and blocks.count("PRIVATE KEY") == 1,
                   f"PEM blocks {blocks}, want the PKCS#8 key first")
            key = serialization.load_pem_private_key(s.value.encode(), None)
            certs = pem_certificates(s.value)
            cert, chain = certs[0], certs[1:]
        expect(cert.public_bytes(serialization.Encoding.DER) == cer, "the linked secret's certificate is not the certificate's cer")
        expect(public_der(key) == cert_public_der(cert), "the linked secret's private key does not match the certificate")
        return len(chain)

    # Create, with a self-signed policy, and the pending operation.

    def create(self):
        rsa_name, ec_name = self.name("rsa"), self.name("ec")

        def create_rsa():
            policy = CertificatePolicy(
                issuer_name=WellKnownIssuerNames.self, subject="CN=rsa.conformance.test, O=Contoso",
                san_dns_names=["rsa.conformance.test", "www.rsa.conformance.test"], key_type=KeyType.rsa, key_size=2048,
                exportable=True, reuse_key=False, content_type=CertificateContentType.pkcs12, validity_in_months=12,
                lifetime_actions=[LifetimeAction(action=CertificatePolicyAction.auto_renew, lifetime_percentage=80)])
            poller = self.certs.begin_create_certificate(rsa_name, policy, tags={"owner": "conformance"}, _polling_interval=POLL)
            first = poller.status()
            cert = poller.result(timeout=30)
            expect(poller.done(), "the create poller did not finish in 30 s")
            expect(first == "inprogress", f"the 202's operation status {first}, want inprogress")
            p = cert.properties
            expect(cert.name == rsa_name and re.fullmatch(r"[0-9a-f]{32}", p.version or ""), f"{cert.name} version {p.version}")
            expect(cert.id == f"{VAULT}/certificates/{rsa_name}/{p.version}", f"id {cert.id}")
            expect(cert.secret_id == f"{VAULT}/secrets/{rsa_name}/{p.version}", f"sid {cert.secret_id}")
            expect(cert.key_id == f"{VAULT}/keys/{rsa_name}/{p.version}", f"kid {cert.key_id}")
            expect(p.enabled is True and p.tags == {"owner": "conformance"}, f"enabled {p.enabled} tags {p.tags}")
            expect(p.x509_thumbprint == thumbprint(cert.cer), "x5t is not the SHA-1 of cer")
            expect(p.recovery_level and p.recoverable_days, f"recovery {p.recovery_level} {p.recoverable_days}")
            expect(p.not_before < datetime.now(timezone.utc) < p.expires_on, f"validity {p.not_before} - {p.expires_on}")
            days = (p.expires_on - p.not_before).days
            expect(360 <= days <= 370, f"{days} days of validity for 12 months")
            x = x509.load_der_x509_certificate(bytes(cert.cer))
            expect(x.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "rsa.conformance.test", f"subject {x.subject}")
            expect(x.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Contoso", f"subject {x.subject}")
            expect(x.issuer == x.subject, "not self-signed")
            expect(sorted(dns_names(x)) == ["rsa.conformance.test", "www.rsa.conformance.test"], f"SANs {dns_names(x)}")
            expect(isinstance(x.public_key(), rsa.RSAPublicKey) and x.public_key().key_size == 2048, "not an RSA 2048 key")
            self.made["rsa"] = (rsa_name, p.version, bytes(cert.cer))
            return f"202 inProgress, then version {p.version}, RSA 2048, 2 DNS SANs"
        self.check("create RSA self-signed, poller waits for the operation", create_rsa)

        def create_ec():
            policy = CertificatePolicy(
                issuer_name=WellKnownIssuerNames.self, subject="CN=ec.conformance.test", san_dns_names=["ec.conformance.test"],
                key_type=KeyType.ec, key_curve_name=KeyCurveName.p_256, content_type=CertificateContentType.pem,
                validity_in_months=3)
            cert = self.certs.begin_create_certificate(ec_name, policy, _polling_interval=POLL).result(timeout=30)
            p = cert.properties
            days = (p.expires_on - p.not_before).days
            expect(88 <= days <= 93, f"{days} days of validity for 3 months")
            x = x509.load_der_x509_certificate(bytes(cert.cer))
            expect(isinstance(x.public_key(), ec.EllipticCurvePublicKey) and x.public_key().curve.name == "secp256r1",
                   "not a P-256 key")
            pol = cert.policy
            expect(pol.key_type == KeyType.ec and pol.key_curve_name == KeyCurveName.p_256, f"policy key {pol.key_type} {pol.key_curve_name}")
            expect(pol.content_type == CertificateContentType.pem, f"policy content type {pol.content_type}")
            self.made["ec"] = (ec_name, p.version, bytes(cert.cer))
            return f"EC P-256, version {p.version}, PEM secret"
        self.check("create EC self-signed (P-256, PEM)", create_ec)

        def operation_after_completion():
            name, version, _ = self.made["rsa"]
            op = self.certs.get_certificate_operation(name)
            expect(op.status == "completed", f"status {op.status}")
            expect(op.target == f"{VAULT}/certificates/{name}", f"target {op.target}")
            expect(op.issuer_name == "Self", f"issuer {op.issuer_name}")
            expect(op.id == f"{VAULT}/certificates/{name}/pending", f"id {op.id}")
            expect(op.request_id and op.cancellation_requested is False, f"request id {op.request_id}")
            expect(op.error is None, f"error {op.error}")
            csr = x509.load_der_x509_csr(bytes(op.csr))
            expect(csr.is_signature_valid, "the CSR's signature does not verify")
            expect(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "rsa.conformance.test", f"CSR subject {csr.subject}")
            expect(self.certs.get_certificate(name).properties.version == version, "the certificate changed")
            return "completed, target, issuer Self, CSR"
        self.check("pending operation readable after it completed", operation_after_completion)

        def delete_operation():
            name, version, _ = self.made["ec"]
            op = self.certs.delete_certificate_operation(name)
            expect(op.status == "completed", f"deleted operation status {op.status}")
            detail = expect_error(lambda: self.certs.get_certificate_operation(name), 404, "PendingCertificateNotFound",
                                  cls=ResourceNotFoundError)
            expect(self.certs.get_certificate(name).properties.version == version, "the certificate went with its operation")
            return f"then GET pending: {detail}; the certificate stays"
        self.check("delete the completed operation", delete_operation)

    # Read: get, versions, lists, policy.

    def read(self):
        rsa_name = self.made.get("rsa", (self.name("rsa"),))[0]

        def versions():
            name, v1, cer1 = self.made["rsa"]
            policy = self.certs.get_certificate_policy(name)
            cert = self.certs.begin_create_certificate(name, policy, _polling_interval=POLL).result(timeout=30)
            v2 = cert.properties.version
            expect(v2 != v1, "the second create made no new version")
            expect(cert.cer != cer1, "the new version has the old certificate")
            expect(self.certs.get_certificate(name).properties.version == v2, "get_certificate is not the latest version")
            old = self.certs.get_certificate_version(name, v1)
            expect(old.properties.version == v1 and old.cer == cer1, "get_certificate_version differs")
            expect(old.id == f"{VAULT}/certificates/{name}/{v1}", f"id {old.id}")
            got = {p.version for p in self.certs.list_properties_of_certificate_versions(name)}
            expect(got == {v1, v2}, f"versions {got}")
            self.made["rsa2"] = (name, v2, bytes(cert.cer))
            return "2 versions, the first pinned"
        self.check("get_certificate_version, list versions", versions)

        def list_certificates():
            items = {p.name: p for p in self.certs.list_properties_of_certificates()}
            want = {self.made[k][0] for k in ("rsa", "ec") if k in self.made} | {SEEDED}
            expect(want <= set(items), f"not listed: {sorted(want - set(items))}")
            for n in want:
                p = items[n]
                expect(p.id == f"{VAULT}/certificates/{n}" and p.version is None, f"list item id {p.id}")
                expect(p.x509_thumbprint and p.enabled is True and p.expires_on, f"list item {n} attributes")
            if "rsa2" in self.made:
                expect(items[rsa_name].x509_thumbprint == thumbprint(self.made["rsa2"][2]), "list item x5t is not the latest's")
            return f"{len(items)} certificates"
        self.check("list_properties_of_certificates", list_certificates)

        def policy_round_trip():
            pol = self.certs.get_certificate_policy(rsa_name)
            expect(pol.issuer_name == "Self", f"issuer {pol.issuer_name}")
            expect(pol.subject == "CN=rsa.conformance.test, O=Contoso", f"subject {pol.subject}")
            expect(sorted(pol.san_dns_names or []) == ["rsa.conformance.test", "www.rsa.conformance.test"], f"SANs {pol.san_dns_names}")
            expect(pol.key_type == KeyType.rsa and pol.key_size == 2048, f"key {pol.key_type} {pol.key_size}")
            expect(pol.exportable is True and pol.reuse_key is False, f"exportable {pol.exportable} reuse {pol.reuse_key}")
            expect(pol.content_type == CertificateContentType.pkcs12, f"content type {pol.content_type}")
            expect(pol.validity_in_months == 12, f"validity {pol.validity_in_months}")
            la = pol.lifetime_actions or []
            expect(len(la) == 1 and la[0].action == CertificatePolicyAction.auto_renew and la[0].lifetime_percentage == 80,
                   f"lifetime actions {[(a.action, a.lifetime_percentage, a.days_before_expiry) for a in la]}")
            expect(pol.enabled is True and pol.created_on and pol.updated_on, "policy attributes")
            return "issuer, subject, SANs, key, content type, validity, AutoRenew 80%"
        self.check("get_certificate_policy", policy_round_trip)

        def policy_update():
            pol = self.certs.update_certificate_policy(rsa_name, CertificatePolicy(
                content_type=CertificateContentType.pem,
                lifetime_actions=[LifetimeAction(action=CertificatePolicyAction.auto_renew, days_before_expiry=30)]))
            expect(pol.content_type == CertificateContentType.pem, f"content type {pol.content_type}")
            la = pol.lifetime_actions or []
            expect(len(la) == 1 and la[0].days_before_expiry == 30 and la[0].lifetime_percentage is None,
                   f"lifetime actions {[(a.action, a.lifetime_percentage, a.days_before_expiry) for a in la]}")
            expect(pol.subject == "CN=rsa.conformance.test, O=Contoso" and pol.key_size == 2048, "the sections not sent changed")
            again = self.certs.get_certificate_policy(rsa_name)
            expect(again.content_type == CertificateContentType.pem and again.lifetime_actions[0].days_before_expiry == 30,
                   "GET policy does not show the update")
            cert = self.certs.begin_create_certificate(rsa_name, again, _polling_interval=POLL).result(timeout=30)
            self.linked_secret(rsa_name, cert.properties.version, cert.cer, CertificateContentType.pem)
            if "rsa2" in self.made:  # the older versions keep their content type
                self.linked_secret(rsa_name, self.made["rsa2"][1], self.made["rsa2"][2], CertificateContentType.pkcs12)
            self.made["rsa3"] = (rsa_name, cert.properties.version, bytes(cert.cer))
            return "PEM and 30 days before expiry; the next version's secret is PEM"
        self.check("update_certificate_policy", policy_update)

        def update_properties():
            name, v1, _ = self.made["rsa"]
            p = self.certs.update_certificate_properties(name, v1, enabled=False, tags={"owner": "conformance", "state": "off"})
            expect(p.properties.enabled is False and p.properties.version == v1, f"enabled {p.properties.enabled}")
            expect(p.properties.tags == {"owner": "conformance", "state": "off"}, f"tags {p.properties.tags}")
            detail = expect_error(lambda: self.secrets.get_secret(name, v1), 403, "Forbidden", "SecretDisabled")
            expect(self.certs.get_certificate_version(name, v1).properties.enabled is False, "GET shows it enabled")
            p = self.certs.update_certificate_properties(name, v1, enabled=True)
            expect(p.properties.enabled is True, "not enabled again")
            expect(self.secrets.get_secret(name, v1).properties.version == v1, "the linked secret is not readable again")
            return f"disabled version's linked secret: {detail}; enabled again"
        self.check("update_certificate_properties: disable -> linked secret 403", update_properties)

        def seeded():
            cert = self.certs.get_certificate(SEEDED)
            pol = cert.policy
            expect(pol.subject == "CN=web.contoso.test, O=Contoso" and pol.san_dns_names == ["web.contoso.test"],
                   f"subject {pol.subject} SANs {pol.san_dns_names}")
            expect(pol.content_type == CertificateContentType.pem and pol.validity_in_months == 6, f"{pol.content_type} {pol.validity_in_months}")
            la = pol.lifetime_actions or []
            expect(len(la) == 1 and la[0].action == CertificatePolicyAction.auto_renew and la[0].lifetime_percentage == 75,
                   "lifetime action")
            expect(cert.properties.tags == {"env": "local"}, f"tags {cert.properties.tags}")
            self.linked_secret(SEEDED, cert.properties.version, cert.cer, CertificateContentType.pem)
            return "the seed's certificates: entry, PEM secret"
        self.check("seeded certificate", seeded)

    # The linked secret.

    def linked(self):
        def pkcs12_secret():
            name, version, cer = self.made["rsa"]
            self.linked_secret(name, version, cer, CertificateContentType.pkcs12)
            latest = self.secrets.get_secret(name)
            expect(latest.properties.version == self.made.get("rsa3", self.made["rsa"])[1], "the latest secret is not the latest certificate")
            return "application/x-pkcs12, no password, key matches cer"
        self.check("linked secret (PKCS#12) through SecretClient", pkcs12_secret)

        def pem_secret():
            name, version, cer = self.made["ec"]
            self.linked_secret(name, version, cer, CertificateContentType.pem)
            return "application/x-pem-file, PKCS#8 key first, key matches cer"
        self.check("linked secret (PEM) through SecretClient", pem_secret)

        def out_content_type():
            name, version, cer = self.made["rsa"]
            # azure-keyvault-secrets 4.7 has no out_content_type keyword (API version 7.3);
            # send_request goes through the SDK's own pipeline (challenge, token) with the
            # API version that has outContentType.
            resp = self.secrets.send_request(HttpRequest(
                "GET", f"/secrets/{name}/{version}?api-version=2025-07-01&outContentType=application%2Fx-pem-file"))
            expect(resp.status_code == 200, f"status {resp.status_code}")
            body = resp.json()
            expect(body.get("contentType") == CertificateContentType.pem, f"content type {body.get('contentType')}")
            key = serialization.load_pem_private_key(body["value"].encode(), None)
            cert = pem_certificates(body["value"])[0]
            expect(cert.public_bytes(serialization.Encoding.DER) == cer, "the converted certificate is not cer")
            expect(public_der(key) == cert_public_der(cert), "the converted key does not match")
            stored = self.secrets.get_secret(name, version)
            expect(stored.properties.content_type == CertificateContentType.pkcs12, "the stored secret changed")
            return "PKCS#12 secret read as PEM (api-version 2025-07-01)"
        self.check("linked secret with outContentType=application/x-pem-file", out_content_type)

        def officer_reads_no_secret():
            name = self.made["rsa"][0]
            expect(self.officer_certs.get_certificate(name).name == name, "Certificates Officer cannot read the certificate")
            return "Certificates Officer: certificate read, secret " + expect_error(
                lambda: self.officer_secrets.get_secret(name), 403, "Forbidden", "ForbiddenByRbac")
        self.check("Certificates Officer reads no linked secret: 403", officer_reads_no_secret)

        def certificate_user():
            # The system-assigned identity, an application's: Key Vault Certificate User.
            cred = ManagedIdentityCredential()
            cert = CertificateClient(VAULT, cred).get_certificate(SEEDED)
            s = SecretClient(VAULT, cred).get_secret(SEEDED)
            expect(s.properties.version == cert.properties.version, f"secret version {s.properties.version}")
            expect(s.properties.content_type == CertificateContentType.pem, f"content type {s.properties.content_type}")
            policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.self, subject="CN=denied")
            return "reads the certificate and its secret; create " + expect_error(
                lambda: CertificateClient(VAULT, cred).begin_create_certificate(self.name("denied"), policy), 403, "Forbidden",
                "ForbiddenByRbac")
        self.check("Certificate User reads certificates and linked secrets, cannot create", certificate_user)

    # Import.

    def imports(self):
        def import_pem():
            name = self.name("pem")
            ca, key, leaf = make_ca_and_leaf("pem.conformance.test", key_type="ec")
            bundle = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                      + leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
            # The SDK base64-encodes the bytes it is given, PEM included.
            cert = self.certs.import_certificate(name, bundle, policy=CertificatePolicy(content_type=CertificateContentType.pem),
                                                 tags={"source": "pem"})
            leaf_der = leaf.public_bytes(serialization.Encoding.DER)
            expect(cert.cer == leaf_der, "cer is not the imported leaf")
            expect(cert.properties.tags == {"source": "pem"}, f"tags {cert.properties.tags}")
            pol = cert.policy
            expect(pol.issuer_name == "Unknown", f"issuer {pol.issuer_name}")
            # Key Vault documents no order for an imported certificate's subject attributes.
            parts = sorted(x.strip() for x in (pol.subject or "").split(","))
            expect(parts == ["CN=pem.conformance.test", "O=Contoso"], f"subject {pol.subject}")
            expect(pol.key_type == KeyType.ec and pol.key_curve_name == KeyCurveName.p_384, f"key {pol.key_type} {pol.key_curve_name}")
            expect(pol.content_type == CertificateContentType.pem, f"content type {pol.content_type}")
            chain = self.linked_secret(name, cert.properties.version, leaf_der, CertificateContentType.pem)
            expect(chain == 1, f"{chain} chain certificates in the secret, want the CA")
            self.made["pem"] = name
            return "EC P-384 with its CA, issuer Unknown, PEM secret with the chain"
        self.check("import PEM (base64-wrapped by the SDK)", import_pem)

        def import_pfx():
            name = self.name("pfx")
            out = []
            for label, enc in (("AES-256", serialization.BestAvailableEncryption(b"conformance-pw")),
                               ("3DES", serialization.PrivateFormat.PKCS12.encryption_builder()
                                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                                .hmac_hash(hashes.SHA1()).build(b"conformance-pw"))):
                ca, key, leaf = make_ca_and_leaf("pfx.conformance.test")
                pfx = pkcs12.serialize_key_and_certificates(b"pfx", key, leaf, [ca], enc)
                cert = self.certs.import_certificate(name, pfx, password="conformance-pw")
                leaf_der = leaf.public_bytes(serialization.Encoding.DER)
                expect(cert.cer == leaf_der, f"{label}: cer is not the imported leaf")
                expect(cert.policy.content_type == CertificateContentType.pkcs12, f"{label}: content type {cert.policy.content_type}")
                expect(cert.policy.key_type == KeyType.rsa and cert.policy.key_size == 2048, f"{label}: key {cert.policy.key_type}")
                chain = self.linked_secret(name, cert.properties.version, leaf_der, CertificateContentType.pkcs12)
                expect(chain == 1, f"{label}: {chain} chain certificates in the secret, want the CA")
                out.append(label)
            versions = list(self.certs.list_properties_of_certificate_versions(name))
            expect(len(versions) == 2, f"{len(versions)} versions after 2 imports")
            return f"PFX with a password ({', '.join(out)}), 2 versions; the secret is a PFX without one"
        self.check("import PFX", import_pfx)

        def import_errors():
            name = self.name("bad")
            _, key, leaf = make_ca_and_leaf("bad.conformance.test")
            pfx = pkcs12.serialize_key_and_certificates(b"bad", key, leaf, None, serialization.BestAvailableEncryption(b"right"))
            wrong = expect_error(lambda: self.certs.import_certificate(name, pfx, password="wrong"), 400, "BadParameter")
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            mismatched = (other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                          + leaf.public_bytes(serialization.Encoding.PEM))
            expect_error(lambda: self.certs.import_certificate(
                name, mismatched, policy=CertificatePolicy(content_type=CertificateContentType.pem)), 400, "BadParameter")
            expect_error(lambda: self.certs.get_certificate(name), 404, "CertificateNotFound", cls=ResourceNotFoundError)
            return f"wrong password and mismatched key: {wrong}"
        self.check("import errors: wrong password, key not the certificate's", import_errors)

    # Delete, recover, purge.

    def lifecycle(self):
        name = self.made.get("pem") or self.made.get("ec", (self.name("ec"),))[0]
        state = {}

        def delete_window():
            version = self.certs.get_certificate(name).properties.version
            poller = self.certs.begin_delete_certificate(name, _polling_interval=POLL)
            d = poller.result()  # the DELETE's answer, before the deletion completes
            expect(d.name == name and d.recovery_id == f"{VAULT}/deletedcertificates/{name}", f"recovery id {d.recovery_id}")
            expect(d.deleted_on is not None and d.scheduled_purge_date is not None, "dates")
            expect(d.properties.version == version and d.cer, f"deleted version {d.properties.version}")
            expect_error(lambda: self.certs.get_certificate(name), 404, "CertificateNotFound", cls=ResourceNotFoundError)
            expect_error(lambda: self.secrets.get_secret(name), 404, "SecretNotFound", cls=ResourceNotFoundError)
            detail = expect_error(lambda: self.certs.purge_deleted_certificate(name), 409, "Conflict", "ObjectIsBeingDeleted",
                                  cls=ResourceExistsError)
            started = time.monotonic()
            poller.wait(timeout=30)
            expect(poller.done(), "the delete poller did not finish in 30 s")
            took = time.monotonic() - started
            dd = self.certs.get_deleted_certificate(name)
            expect(dd.recovery_id == d.recovery_id and dd.deleted_on == d.deleted_on, "deleted certificate differs from the DELETE's answer")
            expect(dd.scheduled_purge_date > dd.deleted_on, "purge date not after the deletion")
            expect(dd.properties.version == version, f"deleted version {dd.properties.version}")
            items = [x for x in self.certs.list_deleted_certificates() if x.name == name]
            expect(len(items) == 1 and items[0].recovery_id == d.recovery_id, "not in the deleted list")
            state["version"] = version
            return f"purge in the window: {detail}; deleted after {took:.1f} s"
        self.check("begin_delete_certificate, get_deleted_certificate", delete_window)

        def recover():
            poller = self.certs.begin_recover_deleted_certificate(name, _polling_interval=POLL)
            poller.wait(timeout=30)
            expect(poller.done(), "the recover poller did not finish")
            cert = poller.result()
            expect(cert.name == name, f"recovered {cert.name}")
            got = self.certs.get_certificate(name)
            expect(got.properties.version == state.get("version"), f"recovered version {got.properties.version}")
            s = self.secrets.get_secret(name)
            expect(s.properties.version == state.get("version"), "the linked secret is not back")
            expect_error(lambda: self.certs.get_deleted_certificate(name), 404, cls=ResourceNotFoundError)
            return "certificate and linked secret back"
        self.check("begin_recover_deleted_certificate", recover)

        def purge():
            self.certs.begin_delete_certificate(name, _polling_interval=POLL).wait(timeout=30)
            self.certs.purge_deleted_certificate(name)
            expect_error(lambda: self.certs.get_deleted_certificate(name), 404, cls=ResourceNotFoundError)
            policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.self, subject="CN=again.conformance.test")
            detail = expect_error(lambda: self.certs.begin_create_certificate(name, policy), 409, "Conflict", cls=ResourceExistsError)
            poller = wait_until(lambda: self.certs.begin_create_certificate(name, policy, _polling_interval=POLL))
            cert = poller.result(timeout=30)
            expect(cert.policy.subject == "CN=again.conformance.test", "not the new certificate")
            expect(len(list(self.certs.list_properties_of_certificate_versions(name))) == 1, "old versions survived the purge")
            return f"re-create while the purge completes: {detail}; then allowed"
        self.check("purge_deleted_certificate, then re-create", purge)

    # Errors.

    def errors(self):
        def missing():
            n = self.name("missing")
            r = expect_error(lambda: self.certs.get_certificate(n), 404, "CertificateNotFound", cls=ResourceNotFoundError)
            if "rsa" in self.made:
                expect_error(lambda: self.certs.get_certificate_version(self.made["rsa"][0], "0" * 32), 404, "CertificateNotFound",
                             cls=ResourceNotFoundError)
            expect_error(lambda: self.certs.get_certificate_policy(n), 404, "CertificateNotFound", cls=ResourceNotFoundError)
            expect_error(lambda: self.certs.get_deleted_certificate(n), 404, "CertificateNotFound", cls=ResourceNotFoundError)
            expect_error(lambda: self.certs.get_certificate_operation(n), 404, cls=ResourceNotFoundError)
            expect_error(lambda: list(self.certs.list_properties_of_certificate_versions(n)), 404, cls=ResourceNotFoundError)
            return r
        self.check("missing certificate -> 404 ResourceNotFoundError", missing)

        def no_access():
            c = CertificateClient(VAULT, ManagedIdentityCredential(client_id=self.info["identities"]["noaccess"]["client_id"]))
            return expect_error(lambda: c.get_certificate(SEEDED), 403, "Forbidden", "ForbiddenByRbac")
        self.check("identity without a role: 403", no_access)

        def bad_policy():
            policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.self, subject="CN=bad", key_type=KeyType.rsa, key_size=1024)
            return expect_error(lambda: self.certs.begin_create_certificate(self.name("badkey"), policy), 400, "BadParameter")
        self.check("invalid policy (RSA 1024) -> 400", bad_policy)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--info", required=True, help="the emulator's info file (viperkv emulator --info)")
    args = ap.parse_args()
    with open(args.info, encoding="utf-8") as f:
        info = json.load(f)
    missing = [k for k in ("HTTPS_PROXY", "HTTP_PROXY", "REQUESTS_CA_BUNDLE") if not os.environ.get(k)]
    if not {"certadmin", "certofficer", "noaccess"} <= set(info.get("identities", {})):
        print("FAIL setup: the emulator does not run the certificates seed (identities certadmin, certofficer, noaccess)")
        print("0 passed, 1 failed")
        return 1
    if missing:
        print(f"FAIL setup: export {', '.join(missing)} as the emulator prints them")
        print("0 passed, 1 failed")
        return 1
    for k in [k for k in os.environ if k.lower() in ("no_proxy", "http_proxy", "https_proxy", "all_proxy") and k.lower() != k]:
        os.environ.pop(k.lower(), None)  # requests prefers the lowercase variables
    logging.getLogger("azure").setLevel(logging.ERROR)  # the SDK's warnings are not checks
    conf = Certificates(info)
    conf.create()
    conf.read()
    conf.linked()
    conf.imports()
    conf.lifecycle()
    conf.errors()
    print(f"{conf.passed} passed, {conf.failed} failed")
    return 0 if conf.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
