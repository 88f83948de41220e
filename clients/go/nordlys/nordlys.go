// Package nordlys holds the few hand-written helpers that go with the
// generated Nordlys API client (package nordlysv1 under gen/): API-key
// credentials and reading the typed details of an error.
package nordlys

import (
	"context"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// APIKey sends an API key as `authorization: Bearer <key>` on every call.
// It refuses a connection without TLS, so that the key never crosses the
// network in clear text; Insecure lifts that for a gateway on loopback.
type APIKey struct {
	Key string
	// Insecure allows a plaintext connection (local development only).
	Insecure bool
}

var _ credentials.PerRPCCredentials = APIKey{}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (k APIKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + k.Key}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (k APIKey) RequireTransportSecurity() bool {
	return !k.Insecure
}

// BadRequest returns the google.rpc.BadRequest an INVALID_ARGUMENT error
// carries in its details (one field violation per rejected field), or nil
// when err has none.
func BadRequest(err error) *errdetails.BadRequest {
	s, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range s.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			return br
		}
	}
	return nil
}
