// Package records loads the auth server's key records: it watches the
// record Secrets of one namespace (Watcher) and installs each record, as it
// arrives, changes or goes, in a Sink (the key index), dropping a removed
// record's rate-limit counter. It keeps no copy of the Secrets.
//
// It knows nothing of HTTP or of how keys are decided, and imports neither
// the auth server nor its index: the index satisfies Sink, and a limiter of
// package ratelimit satisfies Forgetter.
package records

import (
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/meterr/meterr-operator/internal/record"
)

// Sink is where records are installed: the auth server's key index.
type Sink interface {
	// Upsert replaces every entry of the record named name with those of
	// r; created is the record Secret's creationTimestamp. The record is
	// applied even when the error is not nil: the error names the parts
	// that could not be used, and never holds key material.
	Upsert(name string, r *record.Record, created time.Time) error
	// Delete removes the record named name and returns its rate-limit
	// identity, so the caller can drop its counter.
	Delete(name string) (limitID string, ok bool)
	// Names returns the names of the records installed.
	Names() []string
}

// Forgetter drops what a limiter counted for a rate-limit identity.
type Forgetter interface {
	Forget(id string)
}

// Config is what a Store loads into.
type Config struct {
	// Sink receives the records. Required.
	Sink Sink
	// Limiter forgets the counter of a record that is removed. Required.
	Limiter Forgetter
	// Registerer receives meterr_auth_record_errors_total; nil: none.
	Registerer prometheus.Registerer
	// Log receives a line per record that cannot be used (and, at V(1),
	// per record loaded or removed). Lines name records, never keys.
	Log logr.Logger
}

// Store is the reflector's store: it installs each record in the sink and
// keeps nothing else. The reflector calls it from one goroutine.
type Store struct {
	sink    Sink
	limiter Forgetter
	errors  prometheus.Counter
	log     logr.Logger
	synced  chan struct{}
	once    bool
}

var _ cache.TransformingStore = (*Store)(nil)

// NewStore returns a Store that loads into c.Sink.
func NewStore(c Config) (*Store, error) {
	s := &Store{sink: c.Sink, limiter: c.Limiter, log: c.Log, synced: make(chan struct{}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meterr_auth_record_errors_total",
			Help: "Key records that could not be decoded (and were skipped) or held entries that could not be used (which fail closed).",
		})}
	if c.Registerer != nil {
		if err := c.Registerer.Register(s.errors); err != nil {
			return nil, fmt.Errorf("registering record metrics: %w", err)
		}
	}
	return s, nil
}

// Synced is closed once the first full list has been loaded.
func (s *Store) Synced() <-chan struct{} { return s.synced }

// Transformer installs each record in the sink as the initial list (or a
// relist) streams in, and leaves the reflector's temporary store, which holds
// that whole list until Replace, only the record's name (client-go's
// TransformingStore). Installing early is safe: before the first full list
// the server answers not_ready, and afterwards a streamed record is simply
// its newest state, as a watch event would be; Replace still drops the
// records the list no longer has.
func (s *Store) Transformer() cache.TransformFunc {
	return func(obj any) (any, error) {
		if sec, ok := obj.(*corev1.Secret); ok {
			s.upsert(sec)
			return &streamedRecord{namespace: sec.Namespace, name: sec.Name}, nil
		}
		return obj, nil
	}
}

// streamedRecord is what the temporary store keeps of a streamed record
// Secret: its name. The store finds it through GetObjectMeta.
type streamedRecord struct{ namespace, name string }

func (r *streamedRecord) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: r.namespace, Name: r.name}
}

// A runtime.Object too, for client-go's debug checks of the streamed list.
func (r *streamedRecord) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (r *streamedRecord) DeepCopyObject() runtime.Object   { out := *r; return &out }

var _ runtime.Object = (*streamedRecord)(nil)

// Add implements cache.ReflectorStore.
func (s *Store) Add(obj any) error { s.upsert(obj); return nil }

// Update implements cache.ReflectorStore.
func (s *Store) Update(obj any) error { s.upsert(obj); return nil }

// Delete implements cache.ReflectorStore.
func (s *Store) Delete(obj any) error { s.delete(obj); return nil }

// Resync implements cache.ReflectorStore; there is nothing to resync.
func (s *Store) Resync() error { return nil }

// Replace loads a full list: every record in it, and drops the records the
// sink holds that are no longer there.
func (s *Store) Replace(list []any, _ string) error {
	keep := make(map[string]struct{}, len(list))
	for _, obj := range list {
		switch o := obj.(type) {
		case *corev1.Secret: // a plain list, without the transformer
			keep[o.Name] = struct{}{}
			s.upsert(o)
		case *streamedRecord: // installed as it streamed in
			keep[o.name] = struct{}{}
		}
	}
	for _, name := range s.sink.Names() {
		if _, ok := keep[name]; !ok {
			s.deleteName(name)
		}
	}
	if !s.once {
		s.once = true
		close(s.synced)
	}
	return nil
}

func (s *Store) upsert(obj any) {
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	r, err := record.Decode(sec)
	if err != nil {
		// Fail closed: a record we cannot read must not leave its old
		// entries in force (it may have just disabled the key). The quota
		// is kept: the record will most likely be readable again.
		s.sink.Delete(sec.Name)
		s.errors.Inc()
		s.log.Error(err, "skipping key record", "record", sec.Name)
		return
	}
	if err := s.sink.Upsert(sec.Name, r, sec.CreationTimestamp.Time); err != nil {
		s.errors.Inc()
		s.log.Error(err, "key record loaded with problems", "record", sec.Name, "owner", r.Owner.String())
		return
	}
	s.log.V(1).Info("key record loaded", "record", sec.Name, "owner", r.Owner.String(), "versions", len(r.Keys))
}

func (s *Store) delete(obj any) {
	var name string
	switch o := obj.(type) {
	case *corev1.Secret:
		name = o.Name
	case cache.DeletedFinalStateUnknown:
		_, n, err := cache.SplitMetaNamespaceKey(o.Key)
		if err != nil {
			return
		}
		name = n
	default:
		return
	}
	s.deleteName(name)
}

// deleteName removes a record and forgets its rate-limit counter, which
// nothing would read again (a limiter would otherwise keep it for good).
func (s *Store) deleteName(name string) {
	if id, ok := s.sink.Delete(name); ok {
		s.limiter.Forget(id)
		s.log.V(1).Info("key record removed", "record", name)
	}
}
