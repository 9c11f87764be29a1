package driver

import "context"

type pemKey struct{}

// WithPEM asks the Source, through ctx, for a certificate's secret as PEM: Key Vault
// converts a PKCS#12 certificate to PEM when a GET carries outContentType (API 2025-07-01).
// A Source that cannot convert answers as it would without it.
func WithPEM(ctx context.Context) context.Context { return context.WithValue(ctx, pemKey{}, true) }

// WantsPEM reports whether ctx came from WithPEM.
func WantsPEM(ctx context.Context) bool { v, _ := ctx.Value(pemKey{}).(bool); return v }
