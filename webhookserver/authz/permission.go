package authz

import "strings"

// Permission is a set of permissions as a bitmask.
type Permission uint8

// The permissions a key can hold.
const (
	Read Permission = 1 << iota
	Write
	Admin
)

// permissionNames lists the permissions this build knows, in the order they
// are shown.
var permissionNames = [...]struct {
	name string
	bit  Permission
}{{"read", Read}, {"write", Write}, {"admin", Admin}}

// ParsePermission reads one permission name ("read", "write", "admin").
func ParsePermission(s string) (Permission, bool) {
	for _, p := range permissionNames {
		if s == p.name {
			return p.bit, true
		}
	}
	return 0, false
}

// ParsePermissions reads a comma-separated list of permission names ("read",
// "write,admin"); every one named is required. ok is false when a name is
// empty or unknown.
func ParsePermissions(s string) (need Permission, ok bool) {
	for name := range strings.SplitSeq(s, ",") {
		p, known := ParsePermission(strings.TrimSpace(name))
		if !known {
			return 0, false
		}
		need |= p
	}
	return need, true
}

// Grants reports whether a key holding p may do everything in need. Admin
// grants everything.
func (p Permission) Grants(need Permission) bool {
	return p&Admin != 0 || p&need == need
}

// String returns the names in p, comma-separated.
func (p Permission) String() string {
	var names []string
	for _, n := range permissionNames {
		if p&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}
