package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// errNoPostgres says PostgreSQL's server programs are not installed.
var errNoPostgres = errors.New("PostgreSQL not found: no initdb and pg_ctl on PATH, in /usr/lib/postgresql/*/bin or in /usr/local/pgsql/bin " +
	"(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql)")

// superuser is the bootstrap superuser of a private cluster. It logs in only through the
// cluster's unix socket, in a directory only the server's owner can enter.
const superuser = "postgres"

// cluster is a private PostgreSQL server in a temporary directory: initdb and pg_ctl, TCP
// on a free loopback port with scram-sha-256 password authentication (how the service
// connects), and a unix socket in the same directory for the admin. When this process
// runs as root, the server runs as a non-root user (PostgreSQL refuses to run as root).
type cluster struct {
	dir     string // temporary directory: data/, the socket, the server log
	bin     string // directory holding initdb and pg_ctl
	port    int
	cred    *procUser // the server's user when we are root; nil: ourselves
	user    string    // its name
	version string    // e.g. "15.18 (Debian 15.18-0+deb12u1)"
}

// findPostgres returns the directory holding initdb and pg_ctl: PATH first, then Debian's
// /usr/lib/postgresql/<version>/bin (newest first), then the source build's default.
func findPostgres() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(debian, func(a, b string) int { // numerically: 17 before 9.6
		va, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(a)), 64)
		vb, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(b)), 64)
		return -cmpFloat(va, vb)
	})
	dirs = append(dirs, debian...)
	dirs = append(dirs, "/usr/local/pgsql/bin")
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", errNoPostgres
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// startCluster creates and starts a private cluster. Call stop when done: it stops the
// server and removes the directory.
func startCluster(ctx context.Context) (_ *cluster, err error) {
	bin, err := findPostgres()
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin}
	if os.Geteuid() == 0 {
		if c.cred, c.user, err = serverUser(); err != nil {
			return nil, err
		}
	}
	// Not t.TempDir: its parent is private to root, and the server's user must reach it.
	if c.dir, err = os.MkdirTemp("", "pgrotation-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if err := c.chown(c.dir); err != nil {
		return nil, err
	}
	out, err := c.run(ctx, "initdb", "-D", c.data(), "-U", superuser, "--auth-local=trust", "--auth-host=scram-sha-256",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	// Only the owner's unix socket (trust: the socket's directory is private) and loopback
	// TCP with a password, verified by SCRAM.
	hba := "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(c.data(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	if err := c.chown(filepath.Join(c.data(), "pg_hba.conf")); err != nil {
		return nil, err
	}
	if v, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_ctl"), "--version").Output(); err == nil {
		c.version = strings.TrimPrefix(strings.TrimSpace(string(v)), "pg_ctl (PostgreSQL) ")
	}
	for attempt := 1; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		opts := strings.Join([]string{
			"-c listen_addresses=127.0.0.1", "-p " + strconv.Itoa(c.port), "-k " + c.dir,
			"-c password_encryption=scram-sha-256",
			// A throwaway cluster: durability off, for speed.
			"-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
		}, " ")
		out, err = c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.data(), "-l", c.logFile(), "-o", opts)
		if err == nil {
			return c, nil
		}
		if attempt == 3 { // the port may have been taken between freePort and the server's bind
			log, _ := c.serverLog()
			return nil, fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
		}
	}
}

func (c *cluster) data() string    { return filepath.Join(c.dir, "data") }
func (c *cluster) logFile() string { return filepath.Join(c.dir, "server.log") }

// adminConnString connects as the superuser through the unix socket.
func (c *cluster) adminConnString(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.dir, c.port, superuser, db)
}

// serverLog returns the server's log.
func (c *cluster) serverLog() ([]byte, error) { return os.ReadFile(c.logFile()) }

// stop stops the server (fast shutdown: sessions are ended) and removes the directory.
func (c *cluster) stop() error {
	var err error
	if _, statErr := os.Stat(filepath.Join(c.data(), "postmaster.pid")); statErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, e := c.run(ctx, "pg_ctl", "stop", "-w", "-D", c.data(), "-m", "fast"); e != nil {
			_, _ = c.run(ctx, "pg_ctl", "stop", "-w", "-D", c.data(), "-m", "immediate")
			err = fmt.Errorf("pg_ctl stop: %w\n%s", e, out)
		}
	}
	if c.dir != "" {
		err = errors.Join(err, os.RemoveAll(c.dir))
	}
	return err
}

// run runs one of PostgreSQL's programs as the server's user, in the cluster's directory
// (the user may not be able to enter ours).
func (c *cluster) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, prog), args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=" + strings.Join([]string{c.bin, "/usr/bin", "/bin"}, string(os.PathListSeparator)), "LC_ALL=C", "LANG=C", "TZ=UTC"}
	c.asServerUser(cmd)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
