package exepages

import (
	"strconv"
	"testing"
)

// Release on the test binary itself: the pages go, and the code and the
// read-only data they held still run and read (they come back on use).
func TestReleaseKeepsTheProcessWorking(t *testing.T) {
	before, after, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if before <= 0 || after > before {
		t.Errorf("RssFile before %d, after %d: want some before, and no more after", before, after)
	}
	// Code and read-only data read again after the release.
	if got := strconv.Itoa(12345) + strconv.Quote("ok"); got != `12345"ok"` {
		t.Errorf("got %s", got)
	}
	if _, _, err := Release(); err != nil {
		t.Errorf("a second release: %v", err)
	}
}
