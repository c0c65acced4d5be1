package audit

import "github.com/connmgr/connmgr/connections"

// Changed exposes changed to the tests.
func Changed(old, cur *connections.Connection) []string { return changed(old, cur) }

// ComparedFields returns the Go names ("Timeout", "Security.TokenURL") of
// the fields that changed compares.
func ComparedFields() []string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.goName
	}
	return names
}
