package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/viperkv/viperkv"
)

// loadInterruptibly loads p until it is done or the user stops viperkv (Ctrl-C, or a
// SIGTERM from a pipeline): a check waiting on an unreachable vault must end when asked,
// and say that it was stopped, not exit silently. run handles its own signals.
// nothing says what was not done ("nothing checked").
func loadInterruptibly(cmd *cobra.Command, p *viperkv.Provider, nothing string) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	loaded := make(chan error, 1)
	go func() { loaded <- p.Load(ctx) }()
	select {
	case err := <-loaded:
		return err
	case sig := <-sigs:
		cancel()
		<-loaded // Load returns promptly once its context ends
		return &exitError{code: signalStatus(sig), err: errors.New("interrupted while resolving the references: " + nothing)}
	}
}
