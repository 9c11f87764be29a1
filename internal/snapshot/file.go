package snapshot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// checkMode says whether the file's permission bits mean anything: not on Windows, whose
// files have an ACL instead.
const checkMode = runtime.GOOS != "windows"

// leftoverAge is how old a temporary file of an earlier Write must be before a Write
// removes it: a Write takes milliseconds, so one this old belongs to a process that died.
const leftoverAge = 10 * time.Minute

// tempPrefix is the start of the name of Write's temporary file for base: hidden, and
// named after the snapshot so that leftovers are recognised.
func tempPrefix(base string) string { return "." + base + ".tmp-" }

// readFile reads a regular file of at most MaxFileSize bytes, without opening anything
// else (a FIFO would block) and without reading more than the limit.
func readFile(path string) ([]byte, fs.FileMode, *Error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, statError(err)
	}
	if e := checkFileInfo(fi); e != nil {
		return nil, 0, e
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, statError(err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil { // what was opened, which may differ from what was checked
		return nil, 0, statError(err)
	}
	if e := checkFileInfo(fi); e != nil {
		return nil, 0, e
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, 0, &Error{Kind: ErrIO, Reason: "cannot read it: " + err.Error(), Err: err}
	}
	if len(data) > MaxFileSize {
		return nil, 0, &Error{Kind: ErrMalformed, Reason: fmt.Sprintf("larger than the limit of %d bytes", MaxFileSize)}
	}
	return data, fi.Mode(), nil
}

func statError(err error) *Error {
	if errors.Is(err, fs.ErrNotExist) {
		return &Error{Kind: fs.ErrNotExist, Reason: "there is no snapshot file", Err: err}
	}
	return &Error{Kind: ErrIO, Reason: "cannot read it: " + err.Error(), Err: err}
}

func checkFileInfo(fi fs.FileInfo) *Error {
	if !fi.Mode().IsRegular() {
		return &Error{Kind: ErrMalformed, Reason: fmt.Sprintf("not a regular file (%v)", fi.Mode().Type())}
	}
	if fi.Size() > MaxFileSize {
		return &Error{Kind: ErrMalformed, Reason: fmt.Sprintf("%d bytes, larger than the limit of %d", fi.Size(), MaxFileSize)}
	}
	return nil
}

// writeAtomic replaces path with data: a new file in the same directory (so the rename
// stays on one file system), mode 0600, synced, renamed over path, the directory synced.
func writeAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if base == "" {
		return fmt.Errorf("%s names a directory, not a file", path)
	}
	if dir == "" {
		dir = "."
	}
	removeLeftovers(dir, base)
	tmp, err := os.CreateTemp(dir, tempPrefix(base)+"*") // created 0600 (or less), exclusively
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Exactly 0600, whatever the umask took away or a wider default would have added.
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	done = true
	return syncDir(dir)
}

// syncDir makes a rename in dir durable. File systems that cannot sync a directory say so
// with EINVAL or ErrUnsupported; then there is nothing more to do.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // a directory cannot be opened for syncing there; NTFS journals the rename
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("the snapshot was renamed into place, but syncing %s failed: %w", dir, err)
	}
	return nil
}

// removeLeftovers removes the temporary files of Writes to base in dir that are older than
// leftoverAge: their process died between creating and renaming them. Best effort.
func removeLeftovers(dir, base string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := tempPrefix(base)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > leftoverAge {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
