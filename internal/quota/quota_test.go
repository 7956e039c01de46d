package quota

import (
	"strconv"
	"testing"
)

// Key is a function of the identity alone (the decision and the limiter
// compute it apart) and tells identities apart.
func TestKey(t *testing.T) {
	const uid = "0f8fad5b-d9cb-469f-a165-70867728950e"
	if Key(uid) != Key(string([]byte(uid))) {
		t.Fatal("Key is not a function of its input")
	}
	seen := map[uint64]bool{}
	for i := range 100_000 {
		k := Key("uid-" + strconv.Itoa(i))
		if seen[k] {
			t.Fatalf("two of 100,000 identities share a key (%d)", i)
		}
		seen[k] = true
	}
}
