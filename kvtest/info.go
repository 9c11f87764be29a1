package kvtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/cloud"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// WriteInfo writes the files another process needs to reach the server, the way the
// standalone emulator (viperkv emulator --info path) does:
//
//   - path: JSON naming the tenant, the CA file, the managed identity endpoints and their
//     header, the proxy, each vault's direct URL and the identities (readable by the
//     owner only, since it holds the identity header). It is written last, so a program
//     waiting for it finds the other files in place; a reader never sees a partial file;
//   - caFile, or when "" the CA certificate beside path and named after it (info.json:
//     info.ca.pem);
//   - for each identity made [WithFederated], a service account token file beside path
//     (info.json: info.<identity>.token), rewritten every few minutes while the server
//     runs, as Kubernetes rotates projected tokens.
//
// [Server.Close] removes every file WriteInfo wrote that still holds what it wrote. A
// program uses the files without importing kvtest: the info file's proxy_url and ca_file
// (HTTPS_PROXY, HTTP_PROXY and SSL_CERT_FILE or the CA variable of its language), or the
// library's WithEmulatorInfo option.
func (s *Server) WriteInfo(path, caFile string) error {
	wrap := func(err error) error { return fmt.Errorf("kvtest: WriteInfo: %w", err) }
	if caFile == "" {
		caFile = strings.TrimSuffix(path, filepath.Ext(path)) + ".ca.pem"
	}
	var err error
	if path, err = filepath.Abs(path); err != nil {
		return wrap(err)
	}
	if caFile, err = filepath.Abs(caFile); err != nil {
		return wrap(err)
	}
	for _, dir := range []string{filepath.Dir(caFile), filepath.Dir(path)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return wrap(err)
		}
	}
	if err := s.files.write(caFile, s.pki.caPEM, 0o644); err != nil {
		return wrap(err)
	}
	in := s.info(caFile)
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	var tokens []federatedTokenFile
	for _, id := range s.UserIdentities() {
		if !s.credentials(id.Name).federated {
			continue
		}
		file := filepath.Join(filepath.Dir(path), base+"."+fileSafe(id.Name)+".token")
		if err := s.files.write(file, []byte(s.FederatedToken(id)), 0o600); err != nil {
			return wrap(fmt.Errorf("federated token of %s: %w", id.Name, err))
		}
		rec := in.Identities[id.Name]
		rec.FederatedTokenFile = file
		in.Identities[id.Name] = rec
		tokens = append(tokens, federatedTokenFile{id: id, path: file})
	}
	b, err := in.Marshal()
	if err != nil {
		return wrap(err)
	}
	if err := s.files.write(path, b, 0o600); err != nil {
		return wrap(err)
	}
	if len(tokens) > 0 {
		go s.rotateFederatedTokens(tokens)
	}
	return nil
}

// federatedTokenRefresh is how often WriteInfo's token files are rewritten: well within
// a token's hour and more often than azidentity rereads the file (every 10 minutes).
const federatedTokenRefresh = 5 * time.Minute

// federatedTokenFile is a federated identity's token file.
type federatedTokenFile struct {
	id   Identity
	path string
}

func (s *Server) rotateFederatedTokens(tokens []federatedTokenFile) {
	tick := time.NewTicker(federatedTokenRefresh)
	defer tick.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-tick.C:
			for _, t := range tokens {
				if err := s.files.write(t.path, []byte(s.FederatedToken(t.id)), 0o600); err != nil {
					s.cfg.logger.Warn("kvtest: rotating a federated token file", "path", t.path, "err", err)
				}
			}
		}
	}
}

// info describes the server for the info file, caFile being the CA certificate's path.
func (s *Server) info(caFile string) emuinfo.Info {
	in := emuinfo.Info{
		TenantID:           s.tenant,
		CAFile:             caFile,
		IdentityEndpoint:   s.identityEndpoint(),
		IdentityHeader:     s.identityHeader,
		IMDSEndpoint:       s.imdsEndpoint(),
		EntraEndpoint:      s.entraURL(),
		Authority:          s.authorityURL(),
		AuthorityHost:      s.entraURL() + "/",
		Issuer:             s.issuer(),
		OIDCDiscoveryURL:   s.oidcDiscoveryURL(),
		OIDCDiscoveryURLV2: s.authorityURL() + "/v2.0/.well-known/openid-configuration",
		Vaults:             map[string]string{},
		VaultHosts:         map[string]string{},
		Identities:         map[string]emuinfo.Identity{},
		ProxyURL:           s.ProxyURL(),
	}
	for _, v := range s.Vaults() {
		in.Vaults[v.infoKey()] = v.DirectURL()
		in.VaultHosts[v.host] = v.DirectURL()
	}
	rec := func(id Identity) emuinfo.Identity {
		return emuinfo.Identity{Name: id.Name, ClientID: id.ClientID, ObjectID: id.ObjectID, ResourceID: id.ResourceID}
	}
	s.mu.RLock()
	if s.systemEnabled {
		sys := rec(s.system)
		in.SystemIdentity = &sys
	}
	for _, id := range s.users {
		in.Identities[id.Name] = rec(id)
	}
	s.mu.RUnlock()
	return in
}

func (v *Vault) infoKey() string {
	if emuinfo.VaultSuffix(v.host) == cloud.Public().VaultSuffix {
		return v.name
	}
	return v.host
}

// fileSafe keeps letters, digits, dots, dashes and underscores of name; others become "_".
func fileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, name)
}

// ownedFiles are the files a Server wrote, with what it wrote, so Close removes only
// files nobody has replaced since.
type ownedFiles struct {
	mu    sync.Mutex
	paths []string
	data  map[string][]byte
	done  bool // removeAll ran: nothing more is written
}

// write writes data to path atomically and records it.
func (o *ownedFiles) write(path string, data []byte, perm os.FileMode) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return errClosed
	}
	if err := emuinfo.WriteFileAtomic(path, data, perm); err != nil {
		return err
	}
	if o.data == nil {
		o.data = map[string][]byte{}
	}
	if _, ok := o.data[path]; !ok {
		o.paths = append(o.paths, path)
	}
	o.data[path] = bytes.Clone(data)
	return nil
}

// removeAll removes the files still holding what was written, newest first (an info
// file goes before the CA it names).
func (o *ownedFiles) removeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.paths) - 1; i >= 0; i-- {
		p := o.paths[i]
		if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, o.data[p]) {
			_ = os.Remove(p)
		}
	}
	o.paths, o.data, o.done = nil, nil, true
}
