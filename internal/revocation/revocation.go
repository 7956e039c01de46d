// Package revocation files a request to revoke a key version, reported
// leaked, with the MeterrAPIKey that owns it. The request is an annotation
// on that MeterrAPIKey (api/v1alpha1: AnnotationRevokePrefix) holding the
// key's SHA-256, never the key; the controller acts on it (marks the version
// revoked in the key record, replaces a revoked current key) and removes it.
// Both `meterr-operator revoke` and the manager's scanner intakes file
// requests through this package.
package revocation

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// MaxLocation bounds the location a request carries.
const MaxLocation = 1024

// Annotation is the request annotation's key for a key version.
func Annotation(h apikey.Hash) string { return authv1alpha1.AnnotationRevokePrefix + h.ID() }

// Submit files a revocation request for the key version whose hash is h with
// the MeterrAPIKey owner. It patches one annotation, nothing else: the spec
// and the generation stay as they are.
func Submit(ctx context.Context, c client.Client, owner types.NamespacedName, h apikey.Hash, source, location string) error {
	if len(location) > MaxLocation {
		location = location[:MaxLocation]
	}
	v, err := json.Marshal(authv1alpha1.RevocationRequest{Hash: h.String(), Source: source, Location: location})
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{Annotation(h): string(v)}}})
	if err != nil {
		return err
	}
	mak := &authv1alpha1.MeterrAPIKey{}
	mak.Namespace, mak.Name = owner.Namespace, owner.Name
	if err := c.Patch(ctx, mak, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("filing a revocation request with MeterrAPIKey %s: %w", owner, err)
	}
	return nil
}

// State is what a MeterrAPIKey's status says of a key version.
type State int

const (
	// Unknown: the status does not name the version.
	Unknown State = iota
	// Current: status.currentKey.
	Current
	// Previous: one of status.previousKeys (in its overlap).
	Previous
	// Compromised: listed in status.compromisedKeys (already revoked).
	Compromised
)

func (s State) String() string {
	switch s {
	case Current:
		return "current"
	case Previous:
		return "previous"
	case Compromised:
		return "revoked"
	}
	return "unknown"
}

// StateOf says what mak's status says of the key version id.
func StateOf(mak *authv1alpha1.MeterrAPIKey, id string) State {
	switch {
	case slices.ContainsFunc(mak.Status.CompromisedKeys, func(c authv1alpha1.CompromisedKeyStatus) bool { return c.ID == id }):
		return Compromised
	case mak.Status.CurrentKey != nil && mak.Status.CurrentKey.ID == id:
		return Current
	case slices.ContainsFunc(mak.Status.PreviousKeys, func(p authv1alpha1.PreviousKeyStatus) bool { return p.ID == id }):
		return Previous
	}
	return Unknown
}

// Outcome is what Cluster.Revoke did with one key.
type Outcome int

const (
	// NotOurs: not a key of this cluster (or not a key at all).
	NotOurs Outcome = iota
	// Filed: a revocation request was filed with the owner.
	Filed
	// AlreadyRevoked: the key record marks the version revoked.
	AlreadyRevoked
)

// Cluster finds the owner of a reported key in the key records and files a
// revocation request with it: what the manager's scanner intakes do. It
// needs list on Secrets in the records namespace and patch on
// meterrapikeys, both of which the manager has already.
type Cluster struct {
	// Client patches MeterrAPIKeys.
	Client client.Client
	// Reader lists the records uncached (the manager caches no Secret data).
	Reader           client.Reader
	RecordsNamespace string
}

// Reported is one key reported leaked.
type Reported struct {
	Key      string
	Location string
}

// found is where a hash was found.
type found struct {
	owner   record.Owner
	revoked bool
}

// Revoke files a revocation for each reported key that belongs to a
// MeterrAPIKey of this cluster, and returns one Outcome per report. Keys
// that are not ours are forgotten: nothing of them is kept or logged.
func (c *Cluster) Revoke(ctx context.Context, source string, reports []Reported) ([]Outcome, error) {
	out := make([]Outcome, len(reports))
	want := map[apikey.Hash]*found{}
	hashes := make([]apikey.Hash, len(reports))
	for i, r := range reports {
		if apikey.Parse(r.Key) != nil {
			continue
		}
		hashes[i] = apikey.HashOf(r.Key)
		want[hashes[i]] = nil
	}
	if len(want) == 0 {
		return out, nil
	}
	if err := c.find(ctx, want); err != nil {
		return nil, err
	}
	for i, r := range reports {
		f := want[hashes[i]]
		switch {
		case f == nil:
			continue
		case f.revoked:
			out[i] = AlreadyRevoked
			continue
		}
		owner := types.NamespacedName{Namespace: f.owner.Namespace, Name: f.owner.Name}
		err := Submit(ctx, c.Client, owner, hashes[i], source, r.Location)
		switch {
		case apierrors.IsNotFound(err):
			// An orphaned record: its key is refused anyway.
			continue
		case err != nil:
			return nil, err
		}
		out[i] = Filed
	}
	return out, nil
}

// find fills want (hash -> where) from the key records, a page at a time.
func (c *Cluster) find(ctx context.Context, want map[apikey.Hash]*found) error {
	sel, err := labels.Parse(record.Selector)
	if err != nil {
		return err
	}
	cont := ""
	for {
		list := &corev1.SecretList{}
		if err := c.Reader.List(ctx, list, client.InNamespace(c.RecordsNamespace),
			client.MatchingLabelsSelector{Selector: sel}, client.Limit(500), client.Continue(cont)); err != nil {
			return fmt.Errorf("listing key records in %s: %w", c.RecordsNamespace, err)
		}
		for i := range list.Items {
			rec, err := record.Decode(&list.Items[i])
			if err != nil {
				continue
			}
			for _, v := range rec.Keys {
				h, err := apikey.ParseHash(v.Hash)
				if err != nil {
					continue
				}
				if f, ok := want[h]; ok && f == nil {
					want[h] = &found{owner: rec.Owner, revoked: v.Revoked != nil}
				}
			}
		}
		if cont = list.Continue; cont == "" {
			return nil
		}
	}
}
