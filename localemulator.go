package viperkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// WithEmulatorInfo makes the provider talk to a running standalone emulator (viperkv
// emulator --info infoPath) instead of Azure, keeping the configuration's production URLs
// (https://myvault.vault.azure.net): it is how a service runs on a laptop against the
// emulator without importing kvtest into its binary.
//
// It is an explicit opt-in for development, never a default. A service enables it itself,
// for example only when a variable of its own is set:
//
//	if path := os.Getenv("MYAPP_KEYVAULT_EMULATOR"); path != "" {
//		opts = append(opts, viperkv.WithEmulatorInfo(path))
//	}
//
// New reads the info file and then:
//   - trusts only the emulator's CA (its ca_file) for TLS;
//   - sends the vault hosts of the info file, the Entra ID hosts
//     (login.microsoftonline.com and the sovereign ones) and the managed identity's IMDS
//     address (169.254.169.254:80) to the emulator's ports, and refuses every other
//     destination, so nothing reaches Azure or any other host;
//   - gets the managed identity's tokens (system-assigned, or the one WithManagedIdentity
//     names) from the emulator's IMDS style endpoint, without reading or changing the
//     process environment (leave IDENTITY_ENDPOINT and MSI_ENDPOINT unset, or set to the
//     emulator's own endpoint: azidentity prefers them to IMDS).
//
// Every address in the info file must be a loopback IP address (127.0.0.0/8 or ::1):
// anything else is an error from New naming it, before any request. It excludes
// WithTransport. WithCredential still replaces the managed identity, with the caller's
// own transport.
//
// Every Load logs at Warn that the provider is not talking to Azure, to the provider's
// logger or, when its logs are discarded (no WithLogger), to slog.Default(). Load first
// dials the emulator, and fails at once, saying so, when it is not running.
func WithEmulatorInfo(infoPath string) Option {
	return func(o *options) { o.localEmulator = &localEmulator{path: infoPath} }
}

// localEmulator routes a provider's connections to a standalone emulator.
type localEmulator struct {
	path string
	log  *slog.Logger
	imds string // the emulator's identity listener, dialed before each Load
}

// apply reads the info file and sets o up to reach the emulator.
func (e *localEmulator) apply(o *options) error {
	wrap := func(err error) error { return fmt.Errorf("viperkv: New: WithEmulatorInfo(%s): %w", e.path, err) }
	if o.transport != nil {
		return wrap(errors.New("WithTransport cannot be combined with it"))
	}
	in, err := emuinfo.Read(e.path)
	if err != nil {
		return wrap(err)
	}
	// Every address is checked before the CA file is read or anything is dialed.
	rt, err := in.Router("the emulator of " + e.path)
	if err != nil {
		return wrap(err)
	}
	pool, err := in.CertPool()
	if err != nil {
		return wrap(err)
	}
	e.imds = rt.IMDS
	o.transport = &http.Client{Transport: emuinfo.Transport(pool, rt),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	e.log = o.logger
	if e.log.Handler() == slog.DiscardHandler {
		e.log = slog.Default()
	}
	return nil
}

// running fails at once when the emulator is not running (an info file left behind), so
// that Load says so instead of failing each reference after the SDK's retries. e may be
// nil.
func (e *localEmulator) running(ctx context.Context) error {
	if e == nil || e.imds == "" {
		return nil
	}
	if err := emuinfo.Running(ctx, e.imds); err != nil {
		return fmt.Errorf("viperkv: Load: the emulator of %s is not running (%v): start it with viperkv emulator --info %s", e.path, err, e.path)
	}
	return nil
}

// warn says, on every Load, that the provider is not talking to Azure. e may be nil.
func (e *localEmulator) warn() {
	if e != nil {
		e.log.Warn("viperkv: NOT TALKING TO AZURE: secrets come from the local emulator (WithEmulatorInfo); never use this in production",
			"info", e.path)
	}
}
