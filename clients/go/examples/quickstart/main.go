// Quickstart lists the regions and the projects an API key can see.
//
//	NORDLYS_GRPC_ADDR=api.example.com:443 NORDLYS_API_KEY=... go run ./examples/quickstart
//	NORDLYS_GRPC_ADDR=127.0.0.1:50051 NORDLYS_API_KEY=... go run ./examples/quickstart -plaintext
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	nordlysv1 "github.com/nordlys/nordlys/clients/go/gen/nordlys/v1"
	"github.com/nordlys/nordlys/clients/go/nordlys"
)

func main() {
	plaintext := flag.Bool("plaintext", false, "connect without TLS (a local gateway only)")
	flag.Parse()
	addr, key := os.Getenv("NORDLYS_GRPC_ADDR"), os.Getenv("NORDLYS_API_KEY")
	if addr == "" || key == "" {
		log.Fatal("set NORDLYS_GRPC_ADDR (host:port) and NORDLYS_API_KEY")
	}

	transport := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	if *plaintext {
		transport = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(transport),
		grpc.WithPerRPCCredentials(nordlys.APIKey{Key: key, Insecure: *plaintext}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	regions, err := nordlysv1.NewRegionServiceClient(conn).ListRegions(ctx, &nordlysv1.ListRegionsRequest{})
	if err != nil {
		log.Fatalf("ListRegions: %v", err)
	}
	for _, r := range regions.GetRegions() {
		fmt.Printf("region %s up=%t kind=%s\n", r.GetName(), r.GetUp(), r.GetKind())
	}

	projects := nordlysv1.NewProjectServiceClient(conn)
	req := &nordlysv1.ListProjectsRequest{PageSize: 100}
	for {
		page, err := projects.ListProjects(ctx, req)
		if err != nil {
			log.Fatalf("ListProjects: %v", err)
		}
		for _, p := range page.GetProjects() {
			fmt.Printf("%s %q in %v\n", p.GetName(), p.GetDisplayName(), p.GetRegions())
		}
		if page.GetNextPageToken() == "" {
			break
		}
		req.PageToken = page.GetNextPageToken()
	}
}
