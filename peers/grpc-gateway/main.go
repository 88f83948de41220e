// grpc-gateway-peer: grpc-gateway v2's reverse proxy for the public
// nordlys.v1 API, in front of a Nordlys gateway's gRPC port. It exists to
// be compared with the gateway's own JSON port (tests/tests/grpc_gateway_peer.rs)
// and measured beside it (bench --peer-grpc-gateway); it is not part of a
// deployment.
//
// Everything is grpc-gateway's default: runtime.NewServeMux() with no
// options (its JSON marshaler, error handler and header matcher, which
// forwards Authorization as `authorization` metadata), over one
// plaintext gRPC connection per service to the upstream.
//
// Usage:
//
//	grpc-gateway-peer -upstream 127.0.0.1:50051 -listen 127.0.0.1:0
//
// It prints `grpc-gateway-peer listening on ADDR` on stdout once it serves.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	// The google.rpc details the services attach (BadRequest,
	// QuotaFailure, ...): linked in so that the error handler can write
	// them as JSON `Any`s, as any grpc-gateway deployment of an API that
	// sends them does.
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	nordlysv1 "nordlys.dev/peers/grpc-gateway/gen/nordlys/v1"
)

// register is one generated Register*HandlerFromEndpoint per public service.
type register func(context.Context, *runtime.ServeMux, string, []grpc.DialOption) error

var services = []struct {
	name string
	fn   register
}{
	{"nordlys.v1.ProjectService", nordlysv1.RegisterProjectServiceHandlerFromEndpoint},
	{"nordlys.v1.UserService", nordlysv1.RegisterUserServiceHandlerFromEndpoint},
	{"nordlys.v1.MembershipService", nordlysv1.RegisterMembershipServiceHandlerFromEndpoint},
	{"nordlys.v1.NetworkService", nordlysv1.RegisterNetworkServiceHandlerFromEndpoint},
	{"nordlys.v1.AccessRuleService", nordlysv1.RegisterAccessRuleServiceHandlerFromEndpoint},
	{"nordlys.v1.RegionService", nordlysv1.RegisterRegionServiceHandlerFromEndpoint},
	{"nordlys.v1.OrganizationService", nordlysv1.RegisterOrganizationServiceHandlerFromEndpoint},
	{"nordlys.v1.QuotaService", nordlysv1.RegisterQuotaServiceHandlerFromEndpoint},
	{"nordlys.v1.EventService", nordlysv1.RegisterEventServiceHandlerFromEndpoint},
	{"nordlys.v1.EnvironmentService", nordlysv1.RegisterEnvironmentServiceHandlerFromEndpoint},
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	upstream := flag.String("upstream", env("NORDLYS_PEER_UPSTREAM", "127.0.0.1:50051"),
		"the Nordlys gateway's gRPC address, host:port (env NORDLYS_PEER_UPSTREAM)")
	listen := flag.String("listen", env("NORDLYS_PEER_LISTEN", "127.0.0.1:8081"),
		"where to serve HTTP/JSON, host:port; port 0 picks one (env NORDLYS_PEER_LISTEN)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatalf("bad -listen %q: %v", *listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		log.Fatalf("-listen %q: this peer is a test fixture and serves on loopback only", *listen)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mux := runtime.NewServeMux()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	for _, s := range services {
		if err := s.fn(ctx, mux, *upstream, opts); err != nil {
			log.Fatalf("registering %s: %v", s.name, err)
		}
	}

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen %s: %v", *listen, err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	log.Printf("proxying %d services to %s", len(services), *upstream)
	fmt.Printf("grpc-gateway-peer listening on %s\n", listener.Addr())
	if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
}
