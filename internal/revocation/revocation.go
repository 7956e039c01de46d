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

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
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
