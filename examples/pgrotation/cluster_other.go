//go:build !unix

package main

import (
	"errors"
	"os/exec"
)

// procUser is the account a program runs as: only ourselves here.
type procUser struct{}

// serverUser is never needed here: this process cannot be root (os.Geteuid is -1).
func serverUser() (*procUser, string, error) {
	return nil, "", errors.New("running PostgreSQL as another user is supported on Unix only")
}

// asServerUser leaves cmd as it is: the server runs as ourselves.
func (c *cluster) asServerUser(*exec.Cmd) {}

// chown does nothing: the server runs as ourselves, who own the cluster's files.
func (c *cluster) chown(string) error { return nil }
