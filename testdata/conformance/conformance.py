#!/usr/bin/python3
"""Conformance of the viperkv emulator with the Azure SDK for Python.

Runs azure-identity and azure-keyvault-secrets (Debian: apt-get install python3-azure)
against a running standalone emulator (viperkv emulator --seed
testdata/emulator-seed.yaml --info FILE) through its proxy, with production URLs
(https://myvault.vault.azure.net, https://login.microsoftonline.com, IMDS's
http://169.254.169.254) and the SDK's challenge resource verification on, as an
application on Azure would run. The SDK gets no emulator-specific option: only the
variables the emulator prints (HTTPS_PROXY, HTTP_PROXY, REQUESTS_CA_BUNDLE) and, per
check, the managed identity or workload identity variables from the info file.

    python3 testdata/conformance/conformance.py --info FILE

It prints one line per check (PASS name / FAIL name: reason), never a secret value,
and a last line "N passed, M failed"; it exits 0 only if every check passed.
cmd/viperkv/conformance_test.go runs it in CI.
"""

import argparse
import base64
import json
import logging
import os
import re
import sys
import time
import traceback
import uuid

import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientAssertionCredential, DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

MYVAULT = "https://myvault.vault.azure.net"
OTHERVAULT = "https://othervault.vault.azure.net"
SCOPE = "https://vault.azure.net/.default"

# The variables that select a managed identity source or a workload identity.
IDENTITY_VARS = (
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def use_env(**env):
    """Sets exactly the identity variables given, as `export` in a fresh shell would."""
    for k in IDENTITY_VARS:
        os.environ.pop(k, None)
    os.environ.update({k: v for k, v in env.items() if v is not None})


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


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


async def expect_error_async(coro, status, code=None):
    try:
        await coro
    except HttpResponseError as exc:
        got_code, _ = error_of(exc)
        expect(exc.status_code == status and (code is None or got_code == code), f"{exc.status_code} {got_code}, want {status} {code}")
        return
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


class Conformance:
    def __init__(self, info):
        self.info = info
        self.passed = 0
        self.failed = 0
        self.run_id = uuid.uuid4().hex[:8]
        self.expected = {}  # secret name -> value this run stored

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

    # Environments, as the emulator prints them.

    def app_service(self):
        use_env(IDENTITY_ENDPOINT=self.info["identity_endpoint"], IDENTITY_HEADER=self.info["identity_header"])

    def imds(self):
        use_env()  # no variable: the SDK's default source, http://169.254.169.254

    def workload(self, authority_host="https://login.microsoftonline.com/"):
        # What the AKS webhook sets; azure-identity 1.12/1.13 uses token exchange only when
        # AZURE_AUTHORITY_HOST is set too.
        wl = self.info["identities"]["workload"]
        use_env(AZURE_CLIENT_ID=wl["client_id"], AZURE_TENANT_ID=self.info["tenant_id"],
                AZURE_FEDERATED_TOKEN_FILE=wl["federated_token_file"], AZURE_AUTHORITY_HOST=authority_host)

    def name(self, base):
        return f"conf-{base}-{self.run_id}"

    # Identities.

    def identity(self, cred, want_oid, vault=MYVAULT, secret="db-conn"):
        tok = cred.get_token(SCOPE)
        c = claims(tok.token)
        expect(c.get("oid") == want_oid, f"token oid {c.get('oid')}, want {want_oid}")
        expect(c.get("aud") in ("https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"), f"aud {c.get('aud')}")
        expect(tok.expires_on > time.time() + 60, "token expires too soon")
        s = SecretClient(vault, cred).get_secret(secret)
        expect(s.value, "empty value")
        expect(s.id.startswith(f"{vault}/secrets/{secret}/"), f"id {s.id}")
        return s

    def identities(self):
        sys_oid = self.info["system_identity"]["object_id"]
        rot = self.info["identities"]["rotator"]
        wl = self.info["identities"]["workload"]
        seen = {}

        def app_service_system():
            self.app_service()
            s = self.identity(ManagedIdentityCredential(), sys_oid)
            expect(s.properties.content_type == "text/plain", f"content type {s.properties.content_type}")
            expect(s.properties.tags == {"env": "local"}, f"tags {s.properties.tags}")
            seen["db-conn"] = s.value
            return "system-assigned, GET db-conn"
        self.check("managed identity, App Service style, system-assigned", app_service_system)

        def app_service_user():
            self.app_service()
            self.identity(ManagedIdentityCredential(client_id=rot["client_id"]), rot["object_id"], vault=OTHERVAULT, secret="feature-flags")
            return "user-assigned rotator, othervault"
        self.check("managed identity, App Service style, user-assigned", app_service_user)

        def imds_system():
            self.imds()
            s = self.identity(ManagedIdentityCredential(), sys_oid)
            expect(seen.get("db-conn") in (None, s.value), "db-conn differs from the App Service style read")
            return "http://169.254.169.254 through HTTP_PROXY"
        self.check("managed identity, IMDS style, system-assigned", imds_system)

        def imds_user():
            self.imds()
            self.identity(ManagedIdentityCredential(client_id=rot["client_id"]), rot["object_id"])
            return "client_id rotator"
        self.check("managed identity, IMDS style, user-assigned", imds_user)

        def identity_config():
            out = []
            for style, setup, param in (("App Service", self.app_service, "object_id"), ("App Service", self.app_service, "mi_res_id"),
                                        ("IMDS", self.imds, "object_id"), ("IMDS", self.imds, "msi_res_id")):
                setup()
                val = rot["object_id"] if param == "object_id" else rot["resource_id"]
                self.identity(ManagedIdentityCredential(identity_config={param: val}), rot["object_id"])
                out.append(f"{style} {param}")
            return ", ".join(out)
        self.check("managed identity chosen by object ID or resource ID", identity_config)

        def workload_token_exchange():
            self.workload()
            self.identity(ManagedIdentityCredential(), wl["object_id"])
            return "ManagedIdentityCredential token exchange, login.microsoftonline.com"
        self.check("workload identity, token exchange", workload_token_exchange)

        def workload_assertion():
            use_env()
            path = wl["federated_token_file"]

            def assertion():
                with open(path, encoding="ascii") as f:
                    return f.read()
            cred = ClientAssertionCredential(self.info["tenant_id"], wl["client_id"], assertion)
            self.identity(cred, wl["object_id"])
            return "ClientAssertionCredential with the federated token file"
        self.check("workload identity, client assertion", workload_assertion)

        def workload_local_authority():
            self.workload(authority_host=self.info["authority_host"])
            self.identity(ManagedIdentityCredential(), wl["object_id"])
            return "AZURE_AUTHORITY_HOST " + self.info["authority_host"]
        self.check("workload identity, emulator authority host", workload_local_authority)

        def default_credential():
            out = []
            for env, setup, oid in (("App Service", self.app_service, sys_oid), ("IMDS", self.imds, sys_oid),
                                    ("workload", self.workload, wl["object_id"])):
                setup()
                cred = DefaultAzureCredential(exclude_shared_token_cache_credential=True, exclude_cli_credential=True,
                                              exclude_powershell_credential=True, exclude_visual_studio_code_credential=True)
                self.identity(cred, oid)
                out.append(env)
            return ", ".join(out)
        self.check("DefaultAzureCredential (App Service, IMDS with its probe, workload)", default_credential)

        def workload_rbac():
            self.workload()
            c = SecretClient(OTHERVAULT, ManagedIdentityCredential())
            return expect_error(lambda: c.get_secret("feature-flags"), 403, "Forbidden", "ForbiddenByRbac")
        self.check("workload identity, no role on othervault: 403", workload_rbac)

        def no_access():
            self.app_service()
            c = SecretClient(MYVAULT, ManagedIdentityCredential(client_id=self.info["identities"]["noaccess"]["client_id"]))
            return expect_error(lambda: c.get_secret("db-conn"), 403, "Forbidden", "ForbiddenByRbac")
        self.check("identity without a role: 403", no_access)

        def reader_cannot_write():
            self.app_service()
            c = SecretClient(MYVAULT, ManagedIdentityCredential())
            return expect_error(lambda: c.set_secret(self.name("denied"), "x"), 403, "Forbidden", "ForbiddenByRbac")
        self.check("Secrets User cannot set: 403", reader_cannot_write)

    # The proxy and challenge verification.

    def proxy(self):
        def refuses():
            try:
                requests.get("https://example.com/", timeout=10)
            except requests.exceptions.ProxyError as exc:
                expect("403" in str(exc), f"not a 403: {exc}")
                return "CONNECT example.com:443 -> 403"
            raise CheckFailed("https://example.com answered through the proxy")
        self.check("the proxy refuses other hosts", refuses)

        def verification_on():
            # The vault's direct URL passes the proxy (the emulator's own listener), but its
            # host cannot match the challenge resource: verification is on.
            self.app_service()
            c = SecretClient(self.info["vaults"]["myvault"], ManagedIdentityCredential())
            try:
                c.get_secret("db-conn")
            except ValueError as exc:
                expect("challenge" in str(exc).lower(), str(exc))
                return "https://127.0.0.1:PORT refused by the SDK"
            raise CheckFailed("the SDK sent a token to a host that does not match the challenge resource")
        self.check("challenge resource verification is on", verification_on)

    def async_clients(self):
        def aiohttp_transport():
            # azure-core's aiohttp transport reads the proxy variables (trust_env). It would
            # trust OpenSSL's default paths (SSL_CERT_FILE), but Debian bookworm's pair
            # (azure-core 1.26.3, aiohttp 3.8) verifies no certificate at all: azure-core
            # passes ssl=True, which aiohttp 3.8 takes as "do not verify". So this checks
            # the proxy and the wire, not the CA.
            import asyncio
            from azure.identity.aio import ManagedIdentityCredential as AioManagedIdentityCredential
            from azure.keyvault.secrets.aio import SecretClient as AioSecretClient

            async def read(setup):
                setup()
                async with AioManagedIdentityCredential() as cred, AioSecretClient(MYVAULT, cred) as c:
                    s = await c.get_secret("db-conn")
                    expect(s.value and s.properties.content_type == "text/plain", "db-conn")
                    names = [p.name async for p in c.list_properties_of_secrets()]
                    expect("db-conn" in names, "db-conn not listed")
                    await expect_error_async(c.get_secret(self.name("missing")), 404, "SecretNotFound")
            asyncio.run(read(self.app_service))
            asyncio.run(read(self.imds))
            return "aiohttp: App Service and IMDS styles, get, list, 404"
        self.check("async clients (aiohttp transport)", aiohttp_transport)

    # The data plane, as rotator (Key Vault Secrets Officer on both vaults).

    def data_plane(self):
        self.app_service()
        c = SecretClient(MYVAULT, ManagedIdentityCredential(client_id=self.info["identities"]["rotator"]["client_id"]))
        a, v1, v2 = self.name("a"), uuid.uuid4().hex, uuid.uuid4().hex
        versions = {}

        def set_secret():
            p = c.set_secret(a, v1, content_type="text/plain", tags={"owner": "conformance"}).properties
            expect(re.fullmatch(r"[0-9a-f]{32}", p.version or ""), f"version {p.version}")
            expect(p.vault_url == MYVAULT and p.name == a, f"{p.vault_url} {p.name}")
            expect(p.enabled is True and p.created_on is not None and p.updated_on is not None, "attributes")
            expect(p.recovery_level and p.recoverable_days, f"recovery {p.recovery_level} {p.recoverable_days}")
            versions["v1"] = p.version
            return "version " + p.version
        self.check("set", set_secret)

        def get_latest():
            s = c.get_secret(a)
            expect(s.value == v1, "value differs")
            expect(s.properties.version == versions["v1"], f"version {s.properties.version}")
            expect(s.properties.content_type == "text/plain" and s.properties.tags == {"owner": "conformance"}, "content type or tags")
            return "GET /secrets/{name}/"
        self.check("get latest", get_latest)

        def get_pinned():
            p = c.set_secret(a, v2).properties
            versions["v2"] = p.version
            expect(p.version != versions["v1"], "same version twice")
            expect(c.get_secret(a).value == v2, "latest is not the new version")
            old = c.get_secret(a, versions["v1"])
            expect(old.value == v1 and old.properties.version == versions["v1"], "pinned version differs")
            got = {v.version for v in c.list_properties_of_secret_versions(a)}
            expect(got == {versions["v1"], versions["v2"]}, f"versions {got}")
            return "2 versions, the first pinned"
        self.check("get pinned version, list versions", get_pinned)

        def paging():
            names = {self.name(f"page-{i:02d}") for i in range(30)}
            for n in sorted(names):
                c.set_secret(n, "p")
            pages = [list(p) for p in c.list_properties_of_secrets().by_page()]
            listed = [p.name for page in pages for p in page]
            expect(names <= set(listed), f"{len(names - set(listed))} created secrets not listed")
            expect(len(listed) == len(set(listed)), "a secret listed twice")
            expect(len(pages) >= 2, f"{len(pages)} page(s) for {len(listed)} secrets")
            expect(all(len(p) <= 25 for p in pages), "a page holds more than 25")
            expect(all(p.version is None and p.id == f"{MYVAULT}/secrets/{p.name}" for page in pages for p in page), "list items carry a version")
            return f"{len(listed)} secrets in {len(pages)} pages"
        self.check("list with paging (> 25 secrets)", paging)

        def small_pages():
            pages = [list(p) for p in c.list_properties_of_secrets(max_page_size=7).by_page()]
            expect(len(pages) >= 5 and all(len(p) <= 7 for p in pages), f"page sizes {[len(p) for p in pages]}")
            many = self.name("many")
            for i in range(27):
                c.set_secret(many, f"v{i}")
            vpages = [list(p) for p in c.list_properties_of_secret_versions(many).by_page()]
            n = sum(len(p) for p in vpages)
            expect(n == 27 and len(vpages) >= 2, f"{n} versions in {len(vpages)} pages")
            expect(c.get_secret(many).value == "v26", "latest of 27 versions")
            return f"maxresults=7: {len(pages)} pages; 27 versions in {len(vpages)} pages"
        self.check("list pages with maxresults, versions paging", small_pages)

        def attributes():
            from datetime import datetime, timedelta, timezone
            n = self.name("attrs")
            nbf = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
            exp = nbf + timedelta(days=365)
            p = c.set_secret(n, "x", enabled=False, not_before=nbf, expires_on=exp, content_type="application/json").properties
            expect(p.enabled is False and p.not_before == nbf and p.expires_on == exp, f"{p.enabled} {p.not_before} {p.expires_on}")
            expect_error(lambda: c.get_secret(n), 403, "Forbidden", "SecretDisabled")
            listed = [x for x in c.list_properties_of_secrets() if x.name == n]
            expect(len(listed) == 1 and listed[0].enabled is False and listed[0].expires_on == exp, "list item attributes")
            p = c.update_secret_properties(n, enabled=True, expires_on=nbf + timedelta(days=2))
            expect(p.expires_on == nbf + timedelta(days=2) and p.content_type == "application/json", "updated attributes")
            expect(c.get_secret(n).value == "x", "not readable when enabled")
            return "enabled, nbf, exp, content type round trip"
        self.check("attributes: set disabled with nbf/exp, update", attributes)

        def update_disable():
            p = c.update_secret_properties(a, enabled=False, tags={"owner": "conformance", "state": "disabled"})
            expect(p.enabled is False and p.version == versions["v2"], f"enabled {p.enabled} version {p.version}")
            detail = expect_error(lambda: c.get_secret(a), 403, "Forbidden", "SecretDisabled")
            expect(c.get_secret(a, versions["v1"]).value == v1, "the other version is not readable")
            p = c.update_secret_properties(a, versions["v2"], enabled=True)
            expect(p.enabled is True, "not enabled again")
            expect(c.get_secret(a).value == v2, "not readable again")
            return "disabled: " + detail + "; enabled again"
        self.check("update: disable -> 403, enable", update_disable)

        def missing():
            r = expect_error(lambda: c.get_secret(self.name("missing")), 404, "SecretNotFound", cls=ResourceNotFoundError)
            expect_error(lambda: c.get_secret(a, "0" * 32), 404, "SecretNotFound", cls=ResourceNotFoundError)
            expect_error(lambda: c.get_deleted_secret(self.name("missing")), 404, "SecretNotFound", cls=ResourceNotFoundError)
            return r
        self.check("missing secret and version -> 404 SecretNotFound", missing)

        b, bv = self.name("b"), uuid.uuid4().hex

        def delete_window():
            c.set_secret(b, bv)
            poller = c.begin_delete_secret(b)
            d = poller.result()  # the DELETE's answer, before the deletion completes
            expect(d.name == b and d.recovery_id == f"{MYVAULT}/deletedsecrets/{b}", f"recovery id {d.recovery_id}")
            expect(d.deleted_date is not None and d.scheduled_purge_date is not None, "dates")
            detail = expect_error(lambda: c.purge_deleted_secret(b), 409, "Conflict", "ObjectIsBeingDeleted", cls=ResourceExistsError)
            expect_error(lambda: c.set_secret(b, "again"), 409, "Conflict", "ObjectIsBeingDeleted", cls=ResourceExistsError)
            expect_error(lambda: c.get_secret(b), 404, "SecretNotFound", cls=ResourceNotFoundError)
            started = time.monotonic()
            poller.wait(timeout=30)
            expect(poller.done(), "the delete poller did not finish in 30 s")
            took = time.monotonic() - started
            dd = c.get_deleted_secret(b)
            expect(dd.name == b and dd.properties.version is not None, "deleted secret")
            expect(dd.recovery_id == d.recovery_id and dd.deleted_date == d.deleted_date, "deleted secret differs from the DELETE's answer")
            expect(dd.scheduled_purge_date > dd.deleted_date, "purge date not after the deletion")
            items = [x for x in c.list_deleted_secrets() if x.name == b]
            expect(len(items) == 1, "not in the deleted list")
            expect(items[0].recovery_id == d.recovery_id and items[0].scheduled_purge_date and items[0].deleted_date, "deleted list item")
            expect(items[0].properties.version is None, "deleted list item carries a version")
            return f"purge and re-create in the window: {detail}; deleted after {took:.1f} s"
        self.check("delete: 409 while being deleted, poller completes", delete_window)

        def recover():
            poller = c.begin_recover_deleted_secret(b)
            poller.wait(timeout=30)
            expect(poller.done(), "the recover poller did not finish")
            s = c.get_secret(b)
            expect(s.value == bv, "recovered value differs")
            expect_error(lambda: c.get_deleted_secret(b), 404, cls=ResourceNotFoundError)
            return "recovered, readable"
        self.check("recover", recover)

        def purge():
            c.begin_delete_secret(b).wait(timeout=30)
            c.purge_deleted_secret(b)
            expect_error(lambda: c.get_deleted_secret(b), 404, cls=ResourceNotFoundError)
            detail = expect_error(lambda: c.set_secret(b, "again"), 409, "Conflict", cls=ResourceExistsError)
            p = wait_until(lambda: c.set_secret(b, "again"))
            expect(p.properties.version, "no version")
            expect(c.get_secret(b).value == "again", "re-created value differs")
            return f"re-create while the purge completes: {detail}; then allowed"
        self.check("purge, then re-create", purge)

        def backup_restore():
            blob = c.backup_secret(a)
            expect(isinstance(blob, bytes) and len(blob) > 0, "empty backup")
            detail = expect_error(lambda: c.restore_secret_backup(blob), 409, "Conflict", cls=ResourceExistsError)
            c.begin_delete_secret(a).wait(timeout=30)
            c.purge_deleted_secret(a)
            p = wait_until(lambda: c.restore_secret_backup(blob))
            expect(p.name == a, f"restored {p.name}")
            expect(c.get_secret(a).value == v2 and c.get_secret(a, versions["v1"]).value == v1, "restored values differ")
            got = {v.version for v in c.list_properties_of_secret_versions(a)}
            expect(got == {versions["v1"], versions["v2"]}, f"restored versions {got}")
            return f"restore over the existing secret: {detail}; restored both versions"
        self.check("backup and restore", backup_restore)

        def restore_other_vault():
            other = SecretClient(OTHERVAULT, c._credential if hasattr(c, "_credential") else ManagedIdentityCredential(
                client_id=self.info["identities"]["rotator"]["client_id"]))
            p = other.restore_secret_backup(c.backup_secret(a))
            expect(p.name == a and p.vault_url == OTHERVAULT, f"{p.vault_url} {p.name}")
            expect(other.get_secret(a).value == v2, "value differs")
            return "a backup restores into another vault of the subscription"
        self.check("restore into another vault", restore_other_vault)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--info", required=True, help="the emulator's info file (viperkv emulator --info)")
    args = ap.parse_args()
    with open(args.info, encoding="utf-8") as f:
        info = json.load(f)
    missing = [k for k in ("HTTPS_PROXY", "HTTP_PROXY", "REQUESTS_CA_BUNDLE") if not os.environ.get(k)]
    if missing:
        print(f"FAIL setup: export {', '.join(missing)} as the emulator prints them")
        print("0 passed, 1 failed")
        return 1
    for k in [k for k in os.environ if k.lower() in ("no_proxy", "http_proxy", "https_proxy", "all_proxy") and k.lower() != k]:
        os.environ.pop(k.lower(), None)  # requests prefers the lowercase variables
    logging.getLogger("azure").setLevel(logging.ERROR)  # the SDK's warnings are not checks
    conf = Conformance(info)
    conf.proxy()
    conf.identities()
    conf.async_clients()
    conf.data_plane()
    print(f"{conf.passed} passed, {conf.failed} failed")
    return 0 if conf.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
