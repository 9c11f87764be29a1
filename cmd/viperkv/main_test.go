//go:build !windows

package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/viperkv/viperkv/kvtest"
)

// The tests run the viperkv binary as a real process against an emulator in the test
// process, reached through an info file and VIPERKV_EMULATOR_INFO, as a user would.
var (
	binPath  string         // the viperkv binary, built once
	infoPath string         // the emulator's info file
	emu      *kvtest.Server // the emulator, seeded from testdata/emulator-seed.yaml
	testExe  string         // this test binary, which also serves as the child program of run
)

// childEnv selects the child program mode of the test binary (see testChild).
const childModeEnv = "VIPERKV_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childModeEnv) != "" {
		os.Exit(testChild(os.Args[1:]))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "viperkv-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if testExe, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binPath = filepath.Join(dir, "viperkv")
	build := []string{"build", "-o", binPath}
	if raceEnabled {
		build = append(build, "-race")
	}
	if out, err := exec.Command("go", append(build, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	seed, err := os.ReadFile(filepath.Join("..", "..", "testdata", "emulator-seed.yaml"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if emu, err = kvtest.Start(kvtest.WithSeed(seed)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer emu.Close()
	if infoPath, err = writeInfo(emu, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// writeInfo writes an emulator's info file (and its CA) into dir and returns its path.
func writeInfo(srv *kvtest.Server, dir string) (string, error) {
	path := filepath.Join(dir, "info.json")
	return path, srv.WriteInfo(path, "")
}

// exampleSeed is the part of testdata/emulator-seed.yaml the tests compare with.
type exampleSeed struct {
	Identities []struct {
		Name string `yaml:"name"`
	} `yaml:"identities"`
	Vaults []struct {
		Name    string `yaml:"name"`
		Secrets []struct {
			Name    string `yaml:"name"`
			Value   string `yaml:"value"`
			Enabled *bool  `yaml:"enabled"`
		} `yaml:"secrets"`
	} `yaml:"vaults"`
}

func readSeed(path string) (*exampleSeed, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sd exampleSeed
	return &sd, yaml.Unmarshal(b, &sd)
}

// sentinel returns a secret value that must never appear in output unless revealed.
func sentinel(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "SENTINEL-" + hex.EncodeToString(b) + "-value"
}

// hardSentinel is a sentinel secret holding every character an encoding of the CLI's
// escapes (" ' \\ < > & a tab, a control character), a newline, and leading and trailing
// blanks. Each of its two lines holds a random token of its own: no form of the value, and
// no line of it, can show without showing a token (see assertNoSentinel).
func hardSentinel(t *testing.T) string {
	t.Helper()
	return "  " + sentinel(t) + `-"q'b\s<l>g&a` + "\tc\x01d\n" + sentinel(t) + "  "
}

// sentinelTokens returns the random tokens of a sentinel (see sentinel and hardSentinel).
func sentinelTokens(secret string) []string {
	return regexp.MustCompile(`SENTINEL-[0-9a-f]{16}`).FindAllString(secret, -1)
}

// secretName returns a fresh secret name, so parallel tests never share a secret.
func secretName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	if len(name) > 100 {
		name = name[:100]
	}
	return name + "-" + hex.EncodeToString(b)
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	grew chan struct{} // closed by the next write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grew != nil {
		close(s.grew)
		s.grew = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// next returns the output so far and a channel closed when more arrives.
func (s *syncBuffer) next() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grew == nil {
		s.grew = make(chan struct{})
	}
	return s.b.String(), s.grew
}

// proc is a viperkv process.
type proc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	exited         chan struct{}
	code           int
}

// start starts viperkv with args; env ("NAME=value") is added to the test's environment
// and VIPERKV_EMULATOR_INFO.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, exited: make(chan struct{})}
	p.cmd = exec.Command(binPath, args...)
	// With -race, viperkv and the child program (this test binary) would sleep 1 s at exit.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	p.cmd.Env = append(os.Environ(), emulatorInfoEnv+"="+infoPath, "GORACE="+gorace)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// wait waits for the process to exit and returns its status.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(20 * time.Second):
		p.t.Fatalf("viperkv %s did not exit\nstdout:\n%s\nstderr:\n%s", strings.Join(p.cmd.Args[1:], " "), p.stdout.String(), p.stderr.String())
		return -1
	}
}

// waitOutput waits until stdout contains s.
func (p *proc) waitOutput(s string) {
	p.t.Helper()
	p.waitFor("stdout", &p.stdout, s)
}

// waitStderr waits until stderr contains s and returns stderr.
func (p *proc) waitStderr(s string) string {
	p.t.Helper()
	return p.waitFor("stderr", &p.stderr, s)
}

// waitFor waits until the process has written s to buf, and returns what it wrote.
func (p *proc) waitFor(name string, buf *syncBuffer, s string) string {
	p.t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		out, grew := buf.next()
		if strings.Contains(out, s) {
			return out
		}
		select {
		case <-grew:
		case <-p.exited:
			if out := buf.String(); strings.Contains(out, s) {
				return out
			}
			p.t.Fatalf("viperkv exited (status %d) before writing %q to %s\nstdout:\n%s\nstderr:\n%s", p.code, s, name, p.stdout.String(), p.stderr.String())
		case <-deadline.C:
			p.t.Fatalf("no %q in %s after 15 s\nstdout:\n%s\nstderr:\n%s", s, name, p.stdout.String(), p.stderr.String())
		}
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// cli runs viperkv to completion.
func cli(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := start(t, env, args...)
	code = p.wait()
	stdout, stderr = p.stdout.String(), p.stderr.String()
	// The library's errors start with "viperkv: " already: the CLI must not add another.
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Count(line, "viperkv: ") > 1 {
			t.Errorf("viperkv %s: doubled prefix in %q", strings.Join(args, " "), line)
		}
	}
	return code, stdout, stderr
}

// writeFile writes a file in the test's temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// childCmd is the command line that runs this test binary as the child program.
func childCmd(mode string, args ...string) []string {
	return append([]string{"--", testExe, mode}, args...)
}

// childEnvVar makes the test binary act as the child program.
var childEnvVar = childModeEnv + "=1"

// testChild is the program viperkv run starts in the tests:
//
//	print NAME...        prints NAME=value to stdout and to stderr
//	split NAME           writes "<" + value + ">" to stdout in two writes 50 ms apart
//	exit N               exits with status N
//	trap N               prints "ready", then "got SIGHUP" per SIGHUP; exits N on SIGTERM
//	serve FILE NAME...   appends the NAMEs' values (joined by "|") to FILE, prints "started", exits 0 on SIGTERM
//	stubborn FILE NAME   as serve, but ignores SIGTERM and exits 0 on SIGINT
//	reload LOG SRC       appends "pid|" + SRC's content to LOG at start and per SIGHUP, prints "started"; exits 0 on SIGTERM
func testChild(args []string) int {
	if len(args) == 0 {
		return 99
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	switch args[0] {
	case "print":
		for _, n := range args[1:] {
			fmt.Fprintf(out, "%s=%s\n", n, os.Getenv(n))
			fmt.Fprintf(os.Stderr, "stderr %s=%s\n", n, os.Getenv(n))
		}
		return 0
	case "split":
		v := os.Getenv(args[1])
		half := len(v) / 2
		os.Stdout.WriteString("<" + v[:half])
		time.Sleep(50 * time.Millisecond)
		os.Stdout.WriteString(v[half:] + ">\n")
		return 0
	case "exit":
		n, _ := strconv.Atoi(args[1])
		return n
	case "trap":
		n, _ := strconv.Atoi(args[1])
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
		os.Stdout.WriteString("ready\n")
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				os.Stdout.WriteString("got SIGHUP\n")
				continue
			}
			os.Stdout.WriteString("got SIGTERM\n")
			return n
		}
	case "reload":
		logRead := func() bool {
			b, err := os.ReadFile(args[2])
			f, ferr := os.OpenFile(args[1], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil || ferr != nil {
				return false
			}
			defer f.Close()
			fmt.Fprintf(f, "%d|%s\n", os.Getpid(), strings.TrimSpace(string(b)))
			return true
		}
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
		if !logRead() {
			return 98
		}
		os.Stdout.WriteString("started\n")
		for sig := range sigs {
			if sig == syscall.SIGTERM {
				return 0
			}
			if !logRead() {
				return 98
			}
		}
	case "serve", "stubborn":
		f, err := os.OpenFile(args[1], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return 98
		}
		var vals []string
		for _, name := range args[2:] {
			vals = append(vals, os.Getenv(name))
		}
		fmt.Fprintf(f, "%s\n", strings.Join(vals, "|"))
		f.Close()
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		os.Stdout.WriteString("started\n")
		for sig := range sigs {
			if sig == syscall.SIGTERM && args[0] == "stubborn" {
				os.Stdout.WriteString("ignoring SIGTERM\n")
				continue
			}
			return 0
		}
	}
	return 99
}

// lines reads a file's lines; a missing file has none.
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}
