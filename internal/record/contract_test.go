package record

import (
	"testing"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

// The labels record.go spells again are the contract's (api/v1alpha1).
func TestLabelsAreTheContracts(t *testing.T) {
	for _, c := range []struct{ here, contract string }{
		{labelRecord, authv1alpha1.LabelRecord},
		{labelFormat, authv1alpha1.LabelFormat},
		{labelManagedBy, authv1alpha1.LabelManagedBy},
		{managedByValue, authv1alpha1.ManagedByValue},
	} {
		if c.here != c.contract {
			t.Errorf("internal/record says %q where api/v1alpha1 says %q", c.here, c.contract)
		}
	}
}
