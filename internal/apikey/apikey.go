// Package apikey generates and parses meterr API keys.
//
// A key is "mtr_live_" (production) or "mtr_test_" (staging, development),
// then 40 base62 characters from crypto/rand (about 238 bits), then 6 base62
// characters encoding the CRC32 (IEEE) of everything before them. The
// checksum lets a mistyped or truncated key be refused without a lookup, and
// the fixed shape lets secret scanners find keys with one regular expression
// (Pattern).
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/big"
	"unsafe"
)

const (
	// LivePrefix starts every production key.
	LivePrefix = "mtr_live_"
	// TestPrefix starts every staging and development key.
	TestPrefix = "mtr_test_"

	prefixLen   = 9
	randomLen   = 40
	checksumLen = 6
	// Len is the length of every key.
	Len = prefixLen + randomLen + checksumLen

	// Pattern matches every key and nothing shorter or longer; it is the
	// regular expression published for secret scanners.
	Pattern = `\bmtr_(live|test)_[0-9A-Za-z]{46}\b`

	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// hintLen is how many random characters a hint shows: enough to tell keys
	// apart in a listing, far too few to help guess one.
	hintLen = 4
)

// Errors returned by Parse. They never contain the key.
var (
	ErrLength   = errors.New("api key has the wrong length")
	ErrPrefix   = errors.New("api key has an unknown prefix")
	ErrCharset  = errors.New("api key has a character outside base62")
	ErrChecksum = errors.New("api key checksum does not match")
)

// Environment names as used in MeterrAPIKey.spec.environment.
const (
	EnvProduction  = "production"
	EnvStaging     = "staging"
	EnvDevelopment = "development"
)

// PrefixFor returns the key prefix for an environment.
func PrefixFor(environment string) string {
	if environment == EnvProduction {
		return LivePrefix
	}
	return TestPrefix
}

// Hash is the SHA-256 of a whole key: the only form stored at rest.
type Hash [sha256.Size]byte

// HashOf hashes a key (or any string; callers parse first). A key-sized
// input is copied to the stack: converting it to a []byte would allocate on
// every request.
func HashOf(key string) Hash {
	if len(key) <= Len {
		var buf [Len]byte
		n := copy(buf[:], key)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(key))
}

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ID returns the short, non-secret identifier of the key with this hash. It
// allocates only the string (the auth server makes one per request).
func (h Hash) ID() string {
	var b [12]byte
	hex.Encode(b[:], h[:6])
	return string(b[:])
}

// ParseHash reads a hash written by Hash.String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, errors.New("key hash must be 64 hex characters")
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, errors.New("key hash is not hex")
	}
	return h, nil
}

// Generate returns a new random key for an environment.
func Generate(environment string) (string, error) {
	buf := make([]byte, 0, Len)
	buf = append(buf, PrefixFor(environment)...)
	max := big.NewInt(int64(len(alphabet)))
	for range randomLen {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		buf = append(buf, alphabet[n.Int64()])
	}
	buf = appendChecksum(buf)
	return string(buf), nil
}

func appendChecksum(buf []byte) []byte {
	sum := uint64(crc32.ChecksumIEEE(buf))
	var enc [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		enc[i] = alphabet[sum%62]
		sum /= 62
	}
	return append(buf, enc[:]...)
}

// Parse checks a key's shape and checksum. It allocates nothing and its
// errors never contain the key.
func Parse(key string) error {
	if len(key) != Len {
		return ErrLength
	}
	if key[:prefixLen] != LivePrefix && key[:prefixLen] != TestPrefix {
		return ErrPrefix
	}
	for i := prefixLen; i < Len; i++ {
		if base62[key[i]] < 0 {
			return ErrCharset
		}
	}
	sum := crcString(key[:prefixLen+randomLen])
	var got uint64
	for i := prefixLen + randomLen; i < Len; i++ {
		got = got*62 + uint64(base62[key[i]])
	}
	if got != uint64(sum) {
		return ErrChecksum
	}
	return nil
}

// crcString is crc32.ChecksumIEEE over a string's bytes without copying
// them: converting would allocate on every request, and the library's
// accelerated version beats a byte loop. The bytes are only read.
func crcString(s string) uint32 {
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s))) //nolint:gosec // read-only and not retained
}

// base62 maps a byte to its value in the alphabet, or -1.
var base62 = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(alphabet) {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

// IsLive reports whether a well-formed key is a production key.
func IsLive(key string) bool { return len(key) >= prefixLen && key[:prefixLen] == LivePrefix }

// Hint returns the prefix and the first few random characters of a key, for
// status and logs: "mtr_live_AbCd…".
func Hint(key string) string {
	if len(key) < prefixLen+hintLen {
		return "…"
	}
	return key[:prefixLen+hintLen] + "…"
}
