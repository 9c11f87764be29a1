package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// An emulator owns its --info path while it runs: a second emulator given the same path
// refuses to start (exit status 1) instead of replacing the files the first one's users
// read. Two checks decide, and a stale info file (left by an emulator that was killed)
// passes both:
//
//   - a lock beside the info file, PATH.lock, held with flock(2) for as long as the
//     emulator runs and holding its pid. The kernel releases it when the process ends,
//     however it ends, so a crash leaves no lock behind, only a file nobody holds. On
//     platforms without flock (Windows) there is no lock and the probe alone decides.
//   - a probe of the emulator the existing info file names: its OpenID Connect discovery
//     document, fetched from the loopback Entra listener over TLS verified against the CA
//     file the info names. Only that emulator has the CA's key, so a port some other
//     process took over since does not count as running. This catches writers that take
//     no lock: an older viperkv, or a Go program calling kvtest's Server.WriteInfo.

// infoLockSuffix names the lock file of an info file: kv.json -> kv.json.lock.
const infoLockSuffix = ".lock"

// infoProbeTimeout bounds the probe of the emulator an existing info file names. The
// address is loopback: a stopped emulator answers "connection refused" at once.
const infoProbeTimeout = 2 * time.Second

// infoHolder is the running emulator that owns an info path, as far as it is known.
type infoHolder struct {
	pid  int    // 0: unknown
	addr string // how to reach it: its proxy or Entra listener; "" if unknown
}

// claimInfo makes this process the owner of the info file at path (as given to --info),
// or says which running emulator owns it. release gives the path up: call it after the
// emulator has removed its files.
func claimInfo(path string) (release func(), err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("--info %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("--info %s: %w", path, err)
	}
	release, holder, err := lockInfo(abs + infoLockSuffix)
	if err != nil {
		return nil, fmt.Errorf("--info %s: %w", path, err)
	}
	if holder != nil {
		if holder.addr == "" {
			holder.addr = infoAddr(abs) // it may still be starting: no info file yet
		}
		return nil, infoInUse(abs, holder)
	}
	if addr, running := probeInfo(abs); running {
		release()
		return nil, infoInUse(abs, &infoHolder{addr: addr})
	}
	return release, nil
}

// infoInUse is the refusal to take over an info file a running emulator owns.
func infoInUse(path string, h *infoHolder) error {
	var who []string
	if h.pid > 0 {
		who = append(who, "pid "+strconv.Itoa(h.pid))
	}
	if h.addr != "" {
		who = append(who, h.addr)
	}
	if len(who) == 0 {
		who = append(who, "pid unknown")
	}
	stop := "Ctrl+C in its terminal"
	if h.pid > 0 {
		stop += ", or kill " + strconv.Itoa(h.pid)
	}
	return fmt.Errorf("--info %s belongs to a running emulator (%s): stop that one first (%s), or give this one another --info",
		path, strings.Join(who, ", "), stop)
}

// infoAddr returns how the info file at path says its emulator is reached (the proxy,
// else the Entra listener), or "" if it cannot be read.
func infoAddr(path string) string {
	info, err := emuinfo.Read(path)
	if err != nil {
		return ""
	}
	switch {
	case info.ProxyURL != "":
		return "proxy " + info.ProxyURL
	case info.EntraEndpoint != "":
		return "Entra ID " + info.EntraEndpoint
	}
	return ""
}

// probeInfo reports whether the emulator the info file at path names is running: its
// OpenID Connect discovery document answers 200 on its loopback Entra listener, over TLS
// verified against the info's CA file. A missing or unreadable file, a missing CA, an
// address that is not loopback, or no answer all mean not running.
func probeInfo(path string) (addr string, running bool) {
	info, err := emuinfo.Read(path)
	if err != nil {
		return "", false
	}
	u, err := url.Parse(info.OIDCDiscoveryURL)
	if err != nil || u.Scheme != "https" || !emuinfo.Loopback(u.Host) {
		return "", false
	}
	pool, err := info.CertPool()
	if err != nil {
		return "", false
	}
	tr := emuinfo.Transport(pool, nil)
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), infoProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", false
	}
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return "", false
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", false
	}
	return infoAddr(path), true
}
