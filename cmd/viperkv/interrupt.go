package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

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

// provider makes the Provider of v with the options the command's flags give.
func (f *loadFlags) provider(cmd *cobra.Command, v *viper.Viper) (*viperkv.Provider, error) {
	opts, err := f.options(cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	return viperkv.New(v, opts...)
}

// incomplete adds what a failed Load left undone to its *LoadError; other errors (an
// interrupt) pass as they are.
func incomplete(err error, undone string) error {
	var le *viperkv.LoadError
	if errors.As(err, &le) {
		return fmt.Errorf("%w\n%s", err, undone)
	}
	return err
}
