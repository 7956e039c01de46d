package authz

import "sync/atomic"

// Use is where the index records the last accepted use of one key version:
// a word of the index's usage table and the generation the word had when
// the version was looked up. Entry.Use carries it from the lookup to the
// decision, so that recording a use (Use.Mark) costs no allocation, no lock
// and, but once a second per version, no write to memory another core
// reads.
//
// A word is UseGen<<UseGenShift | Unix seconds (0: never used). The index
// gives a word a new generation whenever it gives it to another version (or
// the version's record is reloaded), so a Use kept across such a change
// marks nothing: Mark reports false and the caller records the use by hash
// instead (see index.Index.MarkUsed).
type Use struct {
	word *atomic.Uint64
	gen  uint64
}

// UseGenShift is where a usage word's generation starts; the low bits hold
// Unix seconds (UseSecondsMask), enough until the year 36,812.
const (
	UseGenShift    = 40
	UseSecondsMask = 1<<UseGenShift - 1
)

// NewUse returns the Use of word at generation gen (the index's).
func NewUse(word *atomic.Uint64, gen uint64) Use { return Use{word: word, gen: gen} }

// Mark records a use at Unix second sec. It writes the word only when sec
// is later than the one it holds (one write a second per version at most),
// so the last use never moves back. It reports false only when u is stale
// (the word's generation moved on): the use is then not recorded. An empty
// Use (a version the index keeps no usage for) records nothing.
func (u Use) Mark(sec int64) bool {
	if u.word == nil || sec <= 0 {
		return true
	}
	s := uint64(sec) & UseSecondsMask
	for {
		v := u.word.Load()
		if v>>UseGenShift != u.gen {
			return false
		}
		if v&UseSecondsMask >= s {
			return true
		}
		if u.word.CompareAndSwap(v, u.gen<<UseGenShift|s) {
			return true
		}
	}
}
