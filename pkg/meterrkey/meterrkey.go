// Package meterrkey gives a workload the current meterr API key from the
// Secret that meterr-operator delivers, and an http.RoundTripper that sends
// it.
//
// The operator writes the key to the workload Secret under the data keys
// "api-key" and "METERR_API_KEY". Mounted as a volume, the Secret is updated
// in place by the kubelet when the key rotates: it writes the new files to a
// fresh timestamped directory ("..2026_11_30_00_44_37.123456789") and swaps
// the "..data" symlink to it with a rename, so the file "api-key"
// (a symlink to "..data/api-key") changes all at once. A Source watches that
// directory with fsnotify (the directory, not the file: the rename replaces
// "..data", not "api-key") and re-reads the file on every change, and again
// every Options.Resync (one minute by default) in case an event was missed.
//
// Every key read is checked against the published key format and its CRC32
// checksum (the same rules the auth server applies) before it is used: a
// half-written, truncated or otherwise malformed file is never used, and the
// previous key keeps serving until a valid new one appears. When the file does
// not exist the key comes from the environment variable METERR_API_KEY (for
// workloads that use envFrom; those need a restart after a rotation).
//
// Transport sets "Authorization: Bearer <current key>" on each request to
// the origins it is bound to (Transport.Origins, required), and on no other:
// a redirect to another host or port, or from https to http, goes on without
// the key. On a 401 whose error code is expired_api_key or invalid_api_key it
// reads the key file again if it changed and, if that yields a different key
// and the request's body can be sent again, retries the request once with
// the new key (Transport.WaitForNewKey can hold the requests refused with an
// expired key until the new one arrives: one wait for all of them).
//
// Nothing in this package logs, returns in an error, or passes to a hook the
// key itself; hooks get the key's id, the same short non-secret identifier the
// operator shows in status.currentKey.id and the auth server returns as
// key_id. A Source and a Transport are safe for concurrent use.
//
// In short:
//
//	src, err := meterrkey.New(meterrkey.Options{}) // DefaultPath, then $METERR_API_KEY
//	if err != nil {
//		log.Fatal(err) // no valid key anywhere
//	}
//	defer src.Close()
//	client := &http.Client{Transport: &meterrkey.Transport{
//		Source:  src,
//		Origins: []string{"https://api.meterr.ai"}, // the key goes there and nowhere else
//	}}
//
// docs/clients.md has the same recipe for Node and Python, and how to restart
// workloads that read the key from an environment variable.
package meterrkey

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/apikey"
)

const (
	// DefaultPath is where the examples mount the workload Secret's
	// "api-key" item.
	DefaultPath = "/var/run/secrets/meterr/api-key"
	// DefaultEnv is the environment variable read when the file does not
	// exist: the workload Secret's second data key, for envFrom.
	DefaultEnv = "METERR_API_KEY"
	// DefaultResync is how often the file is re-read even without a change
	// notification.
	DefaultResync = time.Minute

	// maxFileSize bounds what is read from the key file; a key is 55 bytes.
	maxFileSize = 4096
	// waitPoll is how often the wait for a new key looks at the file when
	// no watcher will report a change: one stat for all the waiting
	// requests, and a read only when the file is another one.
	waitPoll = 200 * time.Millisecond
)

// Errors. None of them, and no error this package returns, contains a key.
var (
	// ErrNoKey: neither the file nor the environment variable holds a key.
	ErrNoKey = errors.New("meterrkey: no API key in the key file or the environment")
	// ErrMalformed: what was read is not a well-formed meterr API key
	// (wrong length, prefix, characters or checksum); it was not used.
	ErrMalformed = errors.New("meterrkey: not a well-formed meterr API key")
	// ErrFileRemoved: the key file disappeared after a key had been read
	// from it; the key read last keeps serving.
	ErrFileRemoved = errors.New("meterrkey: the key file disappeared; keeping the current key")
	// ErrClosed: Reload was called after Close.
	ErrClosed = errors.New("meterrkey: source closed")
)

// Options configure a Source. The zero value reads DefaultPath, falls back to
// DefaultEnv, watches the directory and re-reads every DefaultResync.
type Options struct {
	// Path of the key file; empty means DefaultPath.
	Path string
	// Env is the environment variable used when the file does not exist;
	// empty means DefaultEnv, "-" disables the fallback.
	Env string
	// Resync is how often the file is re-read as a backstop to the
	// watcher; zero means DefaultResync, negative disables it.
	Resync time.Duration
	// NoWatch disables fsnotify (for file systems without change
	// notifications); the periodic re-read remains.
	NoWatch bool
	// OnReload, if set, is called after every read that changed the key
	// (keyID is the new key's id, err is nil) and after every read that
	// failed (keyID is the id of the key that keeps serving, "" if none;
	// err says why, and never contains a key). Reads that find the same key
	// again are not reported. Calls are serialised, and come from the
	// watcher's goroutine, from a Transport after a 401, from the wait for
	// a new key, from Reload's caller, or from New; OnReload must not call
	// Reload.
	OnReload func(keyID string, err error)
}

// current is one key and where it came from.
type current struct {
	key, id  string
	fromFile bool
}

// Source holds the current API key. Create it with New and stop it with
// Close.
type Source struct {
	path, env string
	resync    time.Duration
	onReload  func(string, error)
	clock     clock.WithTicker

	cur atomic.Pointer[current]

	reloadMu sync.Mutex   // serialises reads of the file and OnReload calls
	seen     stamp        // the key file as last read; guarded by reloadMu
	reads    atomic.Int64 // reads of the key file, for the tests

	mu        sync.Mutex    // guards the three below; never held during a read
	changed   chan struct{} // closed and replaced when the key changes
	wait      *keyWait      // the wait for a new key in progress, if any
	waitedOut string        // id of a refused key whose wait ended with no new key

	watcher   *fsnotify.Watcher
	watching  atomic.Bool // the directory is being watched
	stop      chan struct{}
	done      chan struct{}
	waits     sync.WaitGroup // the goroutines of the waits for a new key
	closeOnce sync.Once
	closed    atomic.Bool
}

// New reads the key and starts watching for changes. It fails when no valid
// key can be read: from the file when it exists, else from the environment
// variable. Call Close when done.
func New(opts Options) (*Source, error) {
	return newSource(opts, clock.RealClock{})
}

// newSource is New on a clock of the caller's choosing (the tests').
func newSource(opts Options, clk clock.WithTicker) (*Source, error) {
	s := &Source{
		path:     opts.Path,
		env:      opts.Env,
		resync:   opts.Resync,
		onReload: opts.OnReload,
		clock:    clk,
		changed:  make(chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.path == "" {
		s.path = DefaultPath
	}
	if s.env == "" {
		s.env = DefaultEnv
	}
	if s.resync == 0 {
		s.resync = DefaultResync
	}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	if !opts.NoWatch {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return nil, fmt.Errorf("meterrkey: starting the file watcher: %w", err)
		}
		s.watcher = w
		s.watch()
	}
	if s.watcher == nil && s.resync < 0 {
		close(s.done) // nothing to run
		return s, nil
	}
	go s.loop()
	return s, nil
}

// Key returns the current key, or ErrNoKey.
func (s *Source) Key() (string, error) {
	c := s.cur.Load()
	if c == nil {
		return "", ErrNoKey
	}
	return c.key, nil
}

// KeyID returns the current key's id (the auth server's key_id), or "".
func (s *Source) KeyID() string {
	if c := s.cur.Load(); c != nil {
		return c.id
	}
	return ""
}

// Reload reads the key now. It reports whether the key changed. On an error
// the key that was serving keeps serving.
func (s *Source) Reload() (changed bool, err error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.reloadLocked()
}

// refresh reads the key file again only when it is not the file read last
// (a stat otherwise), so that any number of callers cost one read per
// change. Callers that find a change read it one at a time: the first reads,
// the others find the stamp it left.
func (s *Source) refresh() {
	if s.closed.Load() {
		return
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if stampOf(s.path).same(s.seen) {
		return
	}
	_, _ = s.reloadLocked()
}

// reloadLocked is Reload under reloadMu.
func (s *Source) reloadLocked() (changed bool, err error) {
	old := s.cur.Load()
	next, err := s.read(old)
	if err == nil && (old == nil || next.key != old.key) {
		s.cur.Store(next)
		s.mu.Lock()
		close(s.changed)
		s.changed = make(chan struct{})
		s.waitedOut = ""
		s.mu.Unlock()
		changed = true
	} else if err == nil && next.fromFile != old.fromFile {
		s.cur.Store(next) // the same key, now from the file
	}
	if s.onReload != nil && (changed || err != nil) {
		id := ""
		if c := s.cur.Load(); c != nil {
			id = c.id
		}
		s.onReload(id, err)
	}
	return changed, err
}

// read returns the key the file (or the environment) holds now, and
// records in s.seen which file that was.
func (s *Source) read(old *current) (*current, error) {
	s.reads.Add(1)
	key, seen, err := readFile(s.path)
	s.seen = seen
	switch {
	case err == nil:
		if apikey.Parse(key) != nil {
			return nil, fmt.Errorf("%w: read from %s", ErrMalformed, s.path)
		}
		return &current{key: key, id: apikey.HashOf(key).ID(), fromFile: true}, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("meterrkey: %w", err)
	case old != nil && old.fromFile:
		// A missing file after a good one is a broken mount, not a reason
		// to fall back to an environment variable set at start, which
		// holds an older key.
		return nil, ErrFileRemoved
	}
	if s.env == "-" {
		return nil, ErrNoKey
	}
	key = strings.TrimSpace(os.Getenv(s.env))
	if key == "" {
		return nil, ErrNoKey
	}
	if apikey.Parse(key) != nil {
		return nil, fmt.Errorf("%w: read from $%s", ErrMalformed, s.env)
	}
	return &current{key: key, id: apikey.HashOf(key).ID()}, nil
}

// readFile reads a small file; surrounding white space (a trailing newline
// from `kubectl create secret --from-file`) is ignored. It also returns the
// stamp of the file it opened, taken before reading: a write after it
// changes the stamp, so the next refresh reads again.
func readFile(path string) (string, stamp, error) {
	f, err := os.Open(path) //nolint:gosec // the caller names the key file
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", stamp{known: true}, err
		}
		return "", stamp{}, err
	}
	defer f.Close()
	var seen stamp
	if fi, err := f.Stat(); err == nil {
		seen = stamp{info: fi, known: true}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return "", seen, err
	}
	if len(b) > maxFileSize {
		return "", seen, fmt.Errorf("%w: %s is larger than %d bytes", ErrMalformed, path, maxFileSize)
	}
	return string(bytes.TrimSpace(b)), seen, nil
}

// stamp tells one version of the key file from another without reading it:
// the file (device and inode: the kubelet's swap makes a new one), its
// modification time and size, or its absence.
type stamp struct {
	info  fs.FileInfo // nil: the file does not exist
	known bool        // false: could not tell; never the same as anything
}

func stampOf(path string) stamp {
	fi, err := os.Stat(path) // follows api-key -> ..data/api-key
	switch {
	case err == nil:
		return stamp{info: fi, known: true}
	case errors.Is(err, fs.ErrNotExist):
		return stamp{known: true}
	}
	return stamp{}
}

func (a stamp) same(b stamp) bool {
	if !a.known || !b.known {
		return false
	}
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil
	}
	return os.SameFile(a.info, b.info) && a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

// keyWait is the one wait for a new key after the current key was refused:
// every request refused with that key joins it, and it ends for all of them
// at once.
type keyWait struct {
	id      string        // the refused key's id
	changed chan struct{} // Source.changed when the wait began
	over    chan struct{} // closed when the wait ends
}

// waitChange waits until the key is no longer refused, and reports whether
// it changed. It gives up when ctx ends, after d, when the source is closed,
// or when the wait shared by every request refused with this key gives up
// (d after the first of them came). It returns at once when an earlier wait
// for this key gave up and the key has not changed since: a key expired for
// good holds one round of requests, not every one.
// Waiting reads nothing: the watcher reads the file when it changes, and
// without one the shared wait looks at it every waitPoll.
func (s *Source) waitChange(ctx context.Context, refused string, d time.Duration) bool {
	s.mu.Lock()
	changed := s.changed
	c := s.cur.Load()
	if c == nil || c.key != refused || s.closed.Load() || s.waitedOut == c.id {
		s.mu.Unlock()
		return c != nil && c.key != refused
	}
	w := s.wait
	if w == nil || w.changed != changed { // none, or one for an older key, ending
		w = &keyWait{id: c.id, changed: changed, over: make(chan struct{})}
		s.wait = w
		s.waits.Add(1)
		go s.runWait(w, d)
	}
	s.mu.Unlock()

	timer := s.clock.NewTimer(d)
	defer timer.Stop()
	select {
	case <-changed:
	case <-w.over:
	case <-timer.C():
	case <-ctx.Done():
	case <-s.stop:
	}
	return s.cur.Load().key != refused
}

// runWait keeps the shared wait w: it ends it when the key changes, or when
// d has passed without a change (then the refused key counts as waited out),
// and, while no watcher will report a change, looks at the file every
// waitPoll on behalf of every waiting request.
func (s *Source) runWait(w *keyWait, d time.Duration) {
	defer s.waits.Done()
	deadline := s.clock.NewTimer(d)
	defer deadline.Stop()
	poll := s.clock.NewTimer(waitPoll)
	defer poll.Stop()
	for {
		select {
		case <-w.changed:
			s.endWait(w, false)
			return
		case <-deadline.C():
			s.endWait(w, true)
			return
		case <-s.stop:
			s.endWait(w, false)
			return
		case <-poll.C():
			if !s.watching.Load() {
				s.refresh()
			}
			poll.Reset(waitPoll)
		}
	}
}

func (s *Source) endWait(w *keyWait, gaveUp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wait == w {
		s.wait = nil
	}
	if gaveUp && s.changed == w.changed {
		s.waitedOut = w.id
	}
	close(w.over)
}

// watch adds the key file's directory to the watcher, once it exists.
func (s *Source) watch() {
	if s.watcher == nil || s.watching.Load() {
		return
	}
	if err := s.watcher.Add(filepath.Dir(s.path)); err == nil {
		s.watching.Store(true)
	}
}

func (s *Source) loop() {
	defer close(s.done)
	var tick <-chan time.Time
	if s.resync > 0 {
		t := s.clock.NewTicker(s.resync)
		defer t.Stop()
		tick = t.C()
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if s.watcher != nil {
		events, errs = s.watcher.Events, s.watcher.Errors
	}
	dir := filepath.Clean(filepath.Dir(s.path))
	file := filepath.Clean(s.path)
	for {
		select {
		case <-s.stop:
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			name := filepath.Clean(ev.Name)
			if name == dir && ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
				s.watching.Store(false) // the directory itself went away; the resync adds it again
			}
			if name == file {
				// The file itself, written in place: read it whatever
				// its stamp says (a rewrite within the file system's
				// timestamp granularity keeps time and size).
				_, _ = s.Reload()
				continue
			}
			// The kubelet's swap is several events on other names (the
			// timestamped directories, "..data_tmp" and its rename to
			// "..data"): read once, when the file has become another.
			s.refresh()
		case _, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Events may have been lost (an overflow): read now.
			_, _ = s.Reload()
		case <-tick:
			s.watch()
			_, _ = s.Reload()
		}
	}
}

// Close stops the watcher and its goroutine and waits for them. The key read
// last stays available from Key. Close is idempotent.
func (s *Source) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock() // no wait starts after this
		s.closed.Store(true)
		s.mu.Unlock()
		close(s.stop)
		<-s.done
		s.waits.Wait()
		if s.watcher != nil {
			err = s.watcher.Close()
		}
	})
	return err
}
