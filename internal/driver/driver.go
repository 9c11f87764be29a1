// Package driver is the contract between the core and where secret versions and listings
// come from, and the checks every answer passes through on its way in.
//
// A [Source] is a vault's data plane as requests see it: the Azure source (package
// azvault: azsecrets, its credential, transport and error classification) in production,
// the in-memory one (package memvault) in the core's logic tests. Its answers are raw and
// untrusted. A [Reader] is what the core calls: it paces each vault (a limiter that backs
// off on 429), retries throttled requests, and validates every answer, so what the core
// receives is checked data in this package's own small vocabulary: a [Version], a
// [Listing] of [Props], or an [*Error] with a [Kind]. The core maps kinds to statuses.
//
// One conformance suite (package drivertest) runs against both sources, the Azure one on
// the kvtest emulator, so the in-memory source cannot drift from the real one.
package driver

import (
	"context"
	"time"
)

// Source is a Key Vault data plane: each call is one request (or one page), and its
// answers are what the vault sent, unchecked.
type Source interface {
	// Get asks for a version of the named secret, the latest when version is "". A
	// failure is an *Error.
	Get(ctx context.Context, vault, name, version string) (Bundle, error)
	// List starts a list of the vault's secrets.
	List(vault string) Pager
	// Close releases what the source holds, such as idle connections.
	Close() error
}

// Pager reads a list of secrets page by page.
type Pager interface {
	// NextPage reads the next page: the first, then the one the previous page's NextLink
	// names. A failure is an *Error and ends the list (a page cannot be read again).
	NextPage(ctx context.Context) (Page, error)
}

// Page is one page of a list as the vault sent it.
type Page struct {
	Items []Item
	// NextLink is the next page's URL; "" on the last page.
	NextLink string
}

// Attributes are a secret version's attributes as the vault sent them.
type Attributes struct {
	Enabled                              *bool
	Created, Updated, Expires, NotBefore *time.Time
}

// Item is one item of a list page as the vault sent it: a secret and the attributes of
// its current version.
type Item struct {
	ID          string // https://<vault>/secrets/<name>
	Attributes  Attributes
	Tags        map[string]string
	ContentType string
}

// Bundle is the answer to a Get as the vault sent it.
type Bundle struct {
	ID          string // https://<vault>/secrets/<name>/<version>
	Value       *string
	ContentType string
	Tags        map[string]string
	Attributes  Attributes
	// Date is the vault's clock when it answered (its Date header); nil when unknown.
	Date *time.Time
}

// Version is one secret version, checked.
type Version struct {
	Name        string // as the vault spells it
	Version     string // 32 lowercase hex digits
	Value       string
	ContentType string
	Tags        map[string]string
	// Updated is when the version's attributes last changed, to the second.
	Updated, Expires, NotBefore *time.Time
	// Served is the vault's clock when it answered; nil when unknown.
	Served *time.Time
}

// Props is one listed secret, checked: its name and its current version's attributes.
type Props struct {
	Name                        string
	Enabled                     bool
	Updated, Expires, NotBefore *time.Time
	Tags                        map[string]string
	ContentType                 string
}

// Listing is what one list of a vault found.
type Listing struct {
	Props []Props
	// Complete is false when pages were left unread (a bound on pages).
	Complete bool
	// Malformed counts the items left out: their id names no secret of the vault.
	Malformed int
}
