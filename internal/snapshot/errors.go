package snapshot

import (
	"errors"
	"io/fs"
	"time"
)

// The kinds of *Error. Test for one with errors.Is(err, snapshot.ErrStale), or read
// Error.Kind after errors.As. A missing file's Kind is fs.ErrNotExist.
var (
	// ErrKey: the key is not KeySize bytes.
	ErrKey = errors.New("snapshot: bad key")
	// ErrInvalid: Write was given something that cannot be a snapshot, or Read a maxAge that
	// is not positive.
	ErrInvalid = errors.New("snapshot: invalid argument")
	// ErrIO: the file could not be read or written (the *Error's Err says why, for example
	// fs.ErrPermission).
	ErrIO = errors.New("snapshot: i/o error")
	// ErrMalformed: not a snapshot file, truncated, longer than its header says, larger than
	// MaxFileSize, or (a writer's bug) an authenticated payload that does not decode.
	ErrMalformed = errors.New("snapshot: malformed")
	// ErrUnsupportedVersion: a format version this package does not read.
	ErrUnsupportedVersion = errors.New("snapshot: unsupported format version")
	// ErrUnauthenticated: AES-GCM refused the file: it was written under another key, or a
	// byte of it was changed. The two cannot be told apart.
	ErrUnauthenticated = errors.New("snapshot: authentication failed")
	// ErrOtherConfiguration: a genuine snapshot (it authenticated under the key) written for
	// another set of references.
	ErrOtherConfiguration = errors.New("snapshot: another configuration's snapshot")
	// ErrFromFuture: written more than MaxClockSkew after now.
	ErrFromFuture = errors.New("snapshot: written in the future")
	// ErrStale: older than maxAge.
	ErrStale = errors.New("snapshot: older than maxAge")
	// ErrInsecureMode: a warning, never returned by Read as its error: the file grants its
	// group or others some permission. See Snapshot.Warnings.
	ErrInsecureMode = errors.New("snapshot: file mode wider than 0600")
)

// Error is why a snapshot was refused or not written, or (Kind ErrInsecureMode) a warning.
// Its text names the file, never a secret value or a byte of the file's contents.
type Error struct {
	Op     string // "read" or "write"
	Path   string // the snapshot file
	Kind   error  // one of the Err* kinds above, or fs.ErrNotExist
	Reason string // what is wrong, for people

	// Written is when the snapshot was written, for the kinds found after it authenticated
	// (ErrOtherConfiguration, ErrFromFuture, ErrStale); zero otherwise.
	Written time.Time
	// Age is how old the snapshot is (see Snapshot.Age) for ErrStale, and minus how far
	// ahead of now it was written for ErrFromFuture.
	Age time.Duration
	// MaxAge is the maxAge that ErrStale exceeded.
	MaxAge time.Duration
	// Oldest is, for ErrStale, the versionless entry whose last confirmation made the
	// snapshot that old; zero when its written time did.
	Oldest Ref
	// Binding is the binding stored in the file, for ErrOtherConfiguration.
	Binding [32]byte
	// Version is the file's format version, for ErrUnsupportedVersion.
	Version int
	// Mode is the file's permission bits, for ErrInsecureMode.
	Mode fs.FileMode
	// Err is the underlying error, if any (an *fs.PathError for ErrIO and fs.ErrNotExist).
	Err error
}

// Error formats e as "snapshot <path>: refused: <reason>" (reading), "snapshot <path>: not
// written: <reason>" (writing) or "snapshot <path>: warning: <reason>".
func (e *Error) Error() string {
	what := "refused"
	switch {
	case e.Kind == ErrInsecureMode:
		what = "warning"
	case e.Op == "write":
		what = "not written"
	}
	return "snapshot " + e.Path + ": " + what + ": " + e.Reason
}

// Unwrap returns e's Kind and its underlying error, so errors.Is matches both (for example
// ErrIO and fs.ErrPermission, or fs.ErrNotExist).
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}
