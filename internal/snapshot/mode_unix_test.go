//go:build unix

package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestModeAfterWrite: the file is 0600 whatever the umask, and replaces a wider file.
// It changes the process's umask, so it must not run in parallel with other tests.
func TestModeAfterWrite(t *testing.T) {
	for _, umask := range []int{0, 0o022, 0o277} {
		old := syscall.Umask(umask)
		path := filepath.Join(t.TempDir(), "viperkv.snap")
		os.WriteFile(path, []byte("old"), 0o666)
		os.Chmod(path, 0o666)
		err := Write(path, testKey, testSnapshot(now))
		syscall.Umask(old)
		if err != nil {
			t.Fatalf("umask %#o: %v", umask, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o600 {
			t.Fatalf("umask %#o: mode %v, want -rw-------", umask, fi.Mode())
		}
		s, err := Read(path, testKey, testBinding, time.Hour, now)
		if err != nil || len(s.Warnings) != 0 {
			t.Fatalf("umask %#o: Read: %v, warnings %v", umask, err, s.Warnings)
		}
	}
}

// TestWideModeWarns: a file its group or others may read (a restore, a Kubernetes fsGroup)
// is used, with a warning, and the next Write makes it 0600 again.
func TestWideModeWarns(t *testing.T) {
	path := write(t, testSnapshot(now))
	for _, mode := range []os.FileMode{0o640, 0o660, 0o604, 0o644} {
		os.Chmod(path, mode)
		s, err := Read(path, testKey, testBinding, time.Hour, now)
		if err != nil {
			t.Fatalf("mode %v: %v", mode, err)
		}
		if len(s.Entries) != 3 || len(s.Warnings) != 1 {
			t.Fatalf("mode %v: %d entries, warnings %v", mode, len(s.Entries), s.Warnings)
		}
		var w *Error
		if !errors.As(s.Warnings[0], &w) || !errors.Is(w, ErrInsecureMode) || w.Mode != mode || w.Path != path {
			t.Fatalf("mode %v: warning %#v", mode, s.Warnings[0])
		}
		noSecret(t, w.Error())
	}
	if err := Write(path, testKey, testSnapshot(now)); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode() != 0o600 {
		t.Fatalf("mode %v after Write", fi.Mode())
	}
}

// TestFIFO: a named pipe at the path is refused without blocking.
func TestFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "viperkv.snap")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip(err)
	}
	s, err := Read(path, testKey, testBinding, time.Hour, now)
	refused(t, s, err, ErrMalformed)
}

// TestUnreadable: a file this process may not read is an I/O error that says so.
func TestUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	path := write(t, testSnapshot(now))
	os.Chmod(path, 0o000)
	s, err := Read(path, testKey, testBinding, time.Hour, now)
	refused(t, s, err, ErrIO)
	if !errors.Is(err, os.ErrPermission) {
		t.Fatalf("%v does not match fs.ErrPermission", err)
	}
}
