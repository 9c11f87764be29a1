package viperkv

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// fileSettle is how long the file must be quiet before it is re-read: editors and
// Kubernetes change a file in several steps (write temp, rename, remove).
const fileSettle = 100 * time.Millisecond

// fileWatcher watches a config file through its directory (and, for a symlink, the
// target's directory), which survives every way a file gets replaced: in-place writes,
// rename-and-replace, remove-and-create, and Kubernetes' "..data" symlink swap. A content
// hash tells real changes from noise.
type fileWatcher struct {
	path string
	w    *fsnotify.Watcher
	dirs map[string]bool
	sum  [sha256.Size]byte
	err  string // the last error reported, so a lasting fault is reported once
}

func newFileWatcher(path string) (*fileWatcher, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	// No content hash yet: fileLoop's first check re-reads the file, to catch edits made
	// after the app read it and before this watch began (they send no event here).
	fw := &fileWatcher{path: abs, w: w, dirs: map[string]bool{}}
	if err := fw.watchDirs(); err != nil {
		w.Close()
		return nil, err
	}
	return fw, nil
}

// watchDirs watches the file's directory and, when the file is a symlink, its target's.
func (fw *fileWatcher) watchDirs() error {
	dirs := []string{filepath.Dir(fw.path)}
	if real, err := filepath.EvalSymlinks(fw.path); err == nil {
		dirs = append(dirs, filepath.Dir(real))
	}
	for _, d := range dirs {
		if fw.dirs[d] {
			continue
		}
		if err := fw.w.Add(d); err != nil {
			return fmt.Errorf("watching %s: %w", d, err)
		}
		fw.dirs[d] = true
	}
	return nil
}

// fileLoop reloads the configuration when the file's content changes, until ctx ends.
func (p *Provider) fileLoop(ctx context.Context, fw *fileWatcher) {
	defer fw.w.Close()
	settle := time.NewTimer(fileSettle) // check once at the start (see newFileWatcher)
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-fw.w.Events:
			if !ok {
				return
			}
			settle.Reset(fileSettle)
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			// An overflow loses events, not the watch: re-read to be sure.
			p.fileError(fw, fmt.Errorf("watching %s: %w", fw.path, err))
			settle.Reset(fileSettle)
		case <-settle.C:
			p.reloadFile(ctx, fw)
		}
	}
}

// reloadFile re-reads the config file when its content changed and publishes the
// configuration it makes, fetching only references that are new (or have no good value).
// The file is read into a clone of what the last Load captured, keeping what merged files
// and readers added; the app's Viper is not read. A file that is missing or no longer
// parses keeps the last good configuration and is reported.
func (p *Provider) reloadFile(ctx context.Context, fw *fileWatcher) {
	b, err := os.ReadFile(fw.path)
	if err != nil {
		p.fileError(fw, fmt.Errorf("config file %s: %w; keeping the last good configuration", fw.path, err))
		return
	}
	sum := sha256.Sum256(b)
	if sum == fw.sum {
		return
	}
	if err := fw.watchDirs(); err != nil {
		p.fileError(fw, err)
	}
	if err := p.loadFile(ctx, b); err != nil {
		fw.sum = sum // report this content once; the next edit is read again
		p.fileError(fw, fmt.Errorf("config file %s: %w; keeping the last good configuration", fw.path, err))
		return
	}
	fw.sum, fw.err = sum, ""
}

// loadFile publishes the configuration that the config file content b makes, fetching
// only references that are new (or have no good value). It returns the parser's error, and
// publishes nothing, when b does not parse.
func (p *Provider) loadFile(ctx context.Context, b []byte) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	v, settings, err := p.captured.withFile(b)
	if err != nil {
		return err
	}
	p.file, p.applied = b, settings
	base, sc := p.scanOf(v)
	fresh := p.unheld(sc)
	ctx, span := p.tel.span(ctx, "viperkv.file.reload", SourceFile)
	snap, err := p.update(ctx, SourceFile, base, sc, fresh)
	endSpan(span, snap, err)
	return nil
}

// fileError reports a file problem once, as an error event, and keeps watching. It holds
// updateMu like every other update, so watchers never see the configuration go back.
func (p *Provider) fileError(fw *fileWatcher, err error) {
	if err.Error() == fw.err {
		return
	}
	fw.err = err.Error()
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	cur := p.cur.Load()
	e := Event{Kind: EventError, Source: SourceFile, Time: time.Now(), Err: err, Previous: cur.v, Current: cur.v}
	p.logEvent(e)
	p.notify.Publish([]Event{e})
}

// unheld returns the references of sc the provider holds no good value for: what new
// settings must fetch (the rest are reused). The caller holds updateMu.
func (p *Provider) unheld(sc *scan) []Reference {
	var held map[Reference]*secret
	if cur := p.cur.Load(); cur != nil {
		held = cur.secrets
	}
	var fresh []Reference
	for _, r := range sc.distinct() {
		if s, ok := held[r]; !ok || !s.has {
			fresh = append(fresh, r)
		}
	}
	return fresh
}
