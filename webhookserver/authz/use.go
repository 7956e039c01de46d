package authz

import "sync/atomic"

// Use is where the index records the last accepted use of one key version:
// a word of the index's usage table and the tag of the version's hash.
// Entry.Use carries it from the lookup to the decision, so that recording a
// use (Use.Mark) costs no allocation, no lock and, but once a second per
// version, no write to memory another core reads.
//
// A word is tag<<UseTagShift | Unix seconds (0: never used); its tag says
// which version holds it (bits of the version's hash, never 0). When the
// index gives the word to another version (a rotation moved the version,
// its record went), a Use taken before marks nothing: Mark reports false
// and the caller records the use by hash instead (index.Index.MarkUsed).
// A reload of the record that leaves the version in place leaves its Use
// valid.
type Use struct {
	word *atomic.Uint64
	tag  uint64
}

// UseTagShift is where a usage word's tag starts; the low bits hold Unix
// seconds (UseSecondsMask), enough until the year 36,812. UseTagMask
// bounds a tag.
const (
	UseTagShift    = 40
	UseSecondsMask = 1<<UseTagShift - 1
	UseTagMask     = 1<<(64-UseTagShift) - 1
)

// NewUse returns the Use of word for the version whose tag is tag.
func NewUse(word *atomic.Uint64, tag uint64) Use { return Use{word: word, tag: tag} }

// Mark records a use at Unix second sec. It writes the word only when sec
// is later than the one it holds (one write a second per version at most),
// so the last use never moves back. It reports false only when the word no
// longer holds u's version: the use is then not recorded. An empty Use (a
// version the index keeps no usage for) records nothing.
func (u Use) Mark(sec int64) bool {
	if u.word == nil || sec <= 0 {
		return true
	}
	s := uint64(sec) & UseSecondsMask
	for {
		v := u.word.Load()
		if v>>UseTagShift != u.tag {
			return false
		}
		if v&UseSecondsMask >= s {
			return true
		}
		if u.word.CompareAndSwap(v, u.tag<<UseTagShift|s) {
			return true
		}
	}
}
