package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/record"
)

// DefaultOrphanSweep is how often every record's owner is checked again,
// besides the checks on every record event and every MeterrAPIKey deletion.
const DefaultOrphanSweep = 10 * time.Minute

// RecordReaper deletes key records whose MeterrAPIKey no longer exists, or
// exists with another UID (deleted and re-created under the same name). The
// finalizer normally deletes a key's record; this catches what it misses: a
// finalizer removed by hand, a resource deleted while the manager was down.
// Without it such a record's keys would verify forever. It deletes records
// only, never a workload Secret (those go by owner reference).
type RecordReaper struct {
	// Client reads MeterrAPIKeys and record metadata from the cache.
	client.Client
	// APIReader confirms an orphan uncached before it is deleted: the
	// cache may not have seen a MeterrAPIKey created a moment ago.
	APIReader        client.Reader
	RecordsNamespace string
	// Sweep is how often a live record is looked at again.
	Sweep time.Duration
}

// Reconcile checks one record's owner; the request names the record.
func (r *RecordReaper) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	m := recordMeta()
	if err := r.Get(ctx, req.NamespacedName, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if m.Labels[authv1alpha1.LabelRecord] != "true" || !m.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	owner, alive, err := r.ownerAlive(ctx, m, r.Client)
	if err == nil && !alive {
		owner, alive, err = r.ownerAlive(ctx, m, r.APIReader)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if alive {
		return ctrl.Result{RequeueAfter: r.Sweep}, nil
	}
	uid := m.UID
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Name}}
	if err := r.Delete(ctx, s, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("deleting orphaned key record %s/%s: %w", m.Namespace, m.Name, err)
	}
	orphansDeleted.Inc()
	logr.FromContextOrDiscard(ctx).Info("deleted a key record whose MeterrAPIKey is gone; its keys are refused from now on",
		"record", m.Name, "owner", owner)
	return ctrl.Result{}, nil
}

// ownerAlive reports whether the MeterrAPIKey a record names exists with the
// UID the record was made for (its name is derived from that UID).
func (r *RecordReaper) ownerAlive(ctx context.Context, m *metav1.PartialObjectMetadata, reader client.Reader) (string, bool, error) {
	owner := m.Annotations[authv1alpha1.AnnotationOwner]
	ns, name, ok := splitOwner(owner)
	if !ok {
		// No usable annotation: the record's data names its owner.
		s := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(m), s); err != nil {
			return owner, false, client.IgnoreNotFound(err)
		}
		rec, err := record.Decode(s)
		if err != nil {
			return owner, false, nil //nolint:nilerr // an unreadable record without an owner annotation is nobody's: an orphan
		}
		ns, name, owner = rec.Owner.Namespace, rec.Owner.Name, rec.Owner.String()
	}
	mak := &authv1alpha1.MeterrAPIKey{}
	if err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, mak); err != nil {
		if apierrors.IsNotFound(err) {
			return owner, false, nil
		}
		return owner, false, fmt.Errorf("reading MeterrAPIKey %s: %w", owner, err)
	}
	return owner, record.Name(ns, name, mak.UID) == m.Name, nil
}

func recordMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// SetupWithManager registers the reaper: every record event (the initial
// list at start-up included), every MeterrAPIKey deletion, and a periodic
// look at each record.
func (r *RecordReaper) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Sweep <= 0 {
		r.Sweep = DefaultOrphanSweep
	}
	isRecord := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.RecordsNamespace && o.GetLabels()[authv1alpha1.LabelRecord] == "true"
	})
	onlyDeletes := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Secret{}, builder.OnlyMetadata, builder.WithPredicates(isRecord)).
		Watches(&authv1alpha1.MeterrAPIKey{}, handler.EnqueueRequestsFromMapFunc(
			func(_ context.Context, o client.Object) []reconcile.Request {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{
					Namespace: r.RecordsNamespace, Name: record.Name(o.GetNamespace(), o.GetName(), o.GetUID())}}}
			}), builder.WithPredicates(onlyDeletes)).
		Named("keyrecord-reaper").
		Complete(r)
}
