//go:build unix

package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// procUser is the account a program runs as.
type procUser = syscall.Credential

// serverUser picks the non-root account the server runs as when we are root:
// $PGROTATION_PG_USER, else "postgres" (Debian's package creates it), else "nobody".
func serverUser() (*procUser, string, error) {
	names := []string{"postgres", "nobody"}
	if n := os.Getenv("PGROTATION_PG_USER"); n != "" {
		names = []string{n}
	}
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, n, nil
	}
	return nil, "", fmt.Errorf("running as root, and no non-root user (%s) to run PostgreSQL as; create one or set PGROTATION_PG_USER",
		strings.Join(names, ", "))
}

// asServerUser makes cmd run as the server's user, when it is not ourselves.
func (c *cluster) asServerUser(cmd *exec.Cmd) {
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
}

// chown gives path to the server's user, when it is not ourselves.
func (c *cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
}
