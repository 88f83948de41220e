// Scenario runs the clients' shared scenario against a live gateway and
// exits non-zero on the first answer that is not what the API promises:
// projects in two regions, ListProjects one page at a time, a network, the
// google.rpc.BadRequest of a bad CIDR, and deleting it all again.
//
// It reads NORDLYS_GRPC_ADDR (host:port, plaintext) and NORDLYS_API_KEY.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	nordlysv1 "github.com/nordlys/nordlys/clients/go/gen/nordlys/v1"
	"github.com/nordlys/nordlys/clients/go/nordlys"
)

// callTimeout bounds each call, so that a hung gateway fails the scenario
// instead of stalling it.
const callTimeout = 30 * time.Second

type scenario struct {
	projects nordlysv1.ProjectServiceClient
	networks nordlysv1.NetworkServiceClient
	// What was created and not yet deleted, for the cleanup after a failure.
	liveProjects []string
	liveNetworks []string
}

func main() {
	addr, key := os.Getenv("NORDLYS_GRPC_ADDR"), os.Getenv("NORDLYS_API_KEY")
	if addr == "" || key == "" {
		fmt.Fprintln(os.Stderr, "set NORDLYS_GRPC_ADDR (host:port) and NORDLYS_API_KEY")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(nordlys.APIKey{Key: key, Insecure: true}),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer conn.Close()

	s := &scenario{
		projects: nordlysv1.NewProjectServiceClient(conn),
		networks: nordlysv1.NewNetworkServiceClient(conn),
	}
	err = s.run()
	s.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("scenario passed")
}

func call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

func (s *scenario) run() error {
	// A fresh suffix keeps the ids apart from earlier runs on the same stack.
	suffix := randomHex(4)
	ids := []string{"go-" + suffix + "-a", "go-" + suffix + "-b", "go-" + suffix + "-c"}
	placements := [][]string{{"sto1", "osl1"}, {"sto1"}, {"osl1"}}

	for i, id := range ids {
		if err := s.createProject(id, placements[i]); err != nil {
			return err
		}
	}
	if err := s.listOnePerPage(ids); err != nil {
		return err
	}

	project := "projects/" + ids[0]
	if err := s.createNetwork(project); err != nil {
		return err
	}
	if err := s.badCIDR(project); err != nil {
		return err
	}

	for _, name := range slices.Clone(s.liveNetworks) {
		if err := s.deleteNetwork(name); err != nil {
			return err
		}
	}
	for i, id := range ids {
		if err := s.deleteProject("projects/"+id, placements[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *scenario) createProject(id string, regions []string) error {
	ctx, cancel := call()
	defer cancel()
	p, err := s.projects.CreateProject(ctx, &nordlysv1.CreateProjectRequest{
		ProjectId: id,
		RequestId: "scenario-" + id,
		Project: &nordlysv1.Project{
			DisplayName: "Go scenario " + id,
			Regions:     regions,
		},
	})
	if err != nil {
		return fmt.Errorf("CreateProject %s: %w", id, err)
	}
	s.liveProjects = append(s.liveProjects, p.GetName())
	if want := "projects/" + id; p.GetName() != want {
		return fmt.Errorf("CreateProject %s: name %q, want %q", id, p.GetName(), want)
	}
	if got := sorted(p.GetRegions()); !slices.Equal(got, sorted(regions)) {
		return fmt.Errorf("CreateProject %s: regions %v, want %v", id, got, sorted(regions))
	}
	var ready []string
	for _, st := range p.GetRegionStatus() {
		if st.GetState() != nordlysv1.RegionStatus_READY {
			return fmt.Errorf("CreateProject %s: %s is %s (%s)", id, st.GetRegion(), st.GetState(), st.GetMessage())
		}
		ready = append(ready, st.GetRegion())
	}
	if !slices.Equal(sorted(ready), sorted(regions)) {
		return fmt.Errorf("CreateProject %s: READY in %v, want %v", id, sorted(ready), sorted(regions))
	}
	fmt.Printf("created %s in %v\n", p.GetName(), sorted(ready))
	return nil
}

// listOnePerPage pages through ListProjects with page_size 1 and checks that
// every project comes exactly once, in name order, ours among them.
func (s *scenario) listOnePerPage(ids []string) error {
	seen := map[string]bool{}
	var order []string
	req := &nordlysv1.ListProjectsRequest{PageSize: 1}
	pages := 0
	for {
		ctx, cancel := call()
		page, err := s.projects.ListProjects(ctx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("ListProjects page %d: %w", pages+1, err)
		}
		pages++
		if n := len(page.GetProjects()); n > 1 {
			return fmt.Errorf("ListProjects page %d: %d projects with page_size 1", pages, n)
		}
		if u := page.GetUnreachable(); len(u) > 0 {
			return fmt.Errorf("ListProjects page %d: unreachable regions %v", pages, u)
		}
		for _, p := range page.GetProjects() {
			if seen[p.GetName()] {
				return fmt.Errorf("ListProjects page %d: %s seen twice", pages, p.GetName())
			}
			seen[p.GetName()] = true
			order = append(order, p.GetName())
		}
		if page.GetNextPageToken() == "" {
			break
		}
		// A token that never runs out would loop forever: no tenant here has
		// anywhere near this many projects.
		if pages >= 1000 {
			return errors.New("ListProjects: still a next_page_token after 1000 pages")
		}
		req.PageToken = page.GetNextPageToken()
	}
	for _, id := range ids {
		if !seen["projects/"+id] {
			return fmt.Errorf("ListProjects: projects/%s not listed (saw %v)", id, order)
		}
	}
	if !slices.IsSorted(order) {
		return fmt.Errorf("ListProjects: not ordered by name: %v", order)
	}
	if pages < len(ids) {
		return fmt.Errorf("ListProjects: %d projects in %d pages of 1", len(order), pages)
	}
	fmt.Printf("listed %d projects in %d pages of 1, each once\n", len(order), pages)
	return nil
}

func (s *scenario) createNetwork(project string) error {
	ctx, cancel := call()
	defer cancel()
	n, err := s.networks.CreateNetwork(ctx, &nordlysv1.CreateNetworkRequest{
		Parent:    project,
		NetworkId: "net1",
		Network:   &nordlysv1.Network{Region: "sto1", Cidr: "10.20.0.0/24"},
	})
	if err != nil {
		return fmt.Errorf("CreateNetwork: %w", err)
	}
	s.liveNetworks = append(s.liveNetworks, n.GetName())
	if want := project + "/networks/net1"; n.GetName() != want {
		return fmt.Errorf("CreateNetwork: name %q, want %q", n.GetName(), want)
	}
	if n.GetRegion() != "sto1" || n.GetCidr() != "10.20.0.0/24" {
		return fmt.Errorf("CreateNetwork: %s %s, want sto1 10.20.0.0/24", n.GetRegion(), n.GetCidr())
	}
	// The gateway defaults to the subnet's first host address.
	if n.GetGatewayIp() != "10.20.0.1" {
		return fmt.Errorf("CreateNetwork: gateway_ip %q, want 10.20.0.1", n.GetGatewayIp())
	}
	fmt.Printf("created %s: %s in %s, gateway %s\n", n.GetName(), n.GetCidr(), n.GetRegion(), n.GetGatewayIp())
	return nil
}

// badCIDR creates a network whose CIDR does not parse and reads which field
// the google.rpc.BadRequest in the status details blames.
func (s *scenario) badCIDR(project string) error {
	ctx, cancel := call()
	defer cancel()
	n, err := s.networks.CreateNetwork(ctx, &nordlysv1.CreateNetworkRequest{
		Parent:    project,
		NetworkId: "bad",
		Network:   &nordlysv1.Network{Region: "sto1", Cidr: "10.300.0.0/24"},
	})
	if err == nil {
		s.liveNetworks = append(s.liveNetworks, n.GetName())
		return fmt.Errorf("CreateNetwork with CIDR 10.300.0.0/24 succeeded: %s", n.GetName())
	}
	if code := status.Code(err); code != codes.InvalidArgument {
		return fmt.Errorf("CreateNetwork with a bad CIDR: %s, want InvalidArgument: %w", code, err)
	}
	br := nordlys.BadRequest(err)
	if br == nil {
		return fmt.Errorf("CreateNetwork with a bad CIDR: no google.rpc.BadRequest in the details: %w", err)
	}
	var fields []string
	for _, v := range br.GetFieldViolations() {
		fields = append(fields, v.GetField())
	}
	// The gateway names the field as the request spelled it.
	if want := []string{"network.cidr"}; !slices.Equal(fields, want) {
		return fmt.Errorf("CreateNetwork with a bad CIDR: violations of %v, want %v", fields, want)
	}
	fmt.Printf("bad CIDR refused: %s: %s\n", fields[0], br.GetFieldViolations()[0].GetDescription())
	return nil
}

func (s *scenario) deleteNetwork(name string) error {
	ctx, cancel := call()
	defer cancel()
	if _, err := s.networks.DeleteNetwork(ctx, &nordlysv1.DeleteNetworkRequest{Name: name}); err != nil {
		return fmt.Errorf("DeleteNetwork %s: %w", name, err)
	}
	s.liveNetworks = slices.DeleteFunc(s.liveNetworks, func(n string) bool { return n == name })
	if _, err := s.networks.GetNetwork(ctx, &nordlysv1.GetNetworkRequest{Name: name}); status.Code(err) != codes.NotFound {
		return fmt.Errorf("GetNetwork %s after its delete: %v, want NotFound", name, err)
	}
	fmt.Printf("deleted %s\n", name)
	return nil
}

func (s *scenario) deleteProject(name string, regions []string) error {
	ctx, cancel := call()
	defer cancel()
	resp, err := s.projects.DeleteProject(ctx, &nordlysv1.DeleteProjectRequest{Name: name})
	if err != nil {
		return fmt.Errorf("DeleteProject %s: %w", name, err)
	}
	s.liveProjects = slices.DeleteFunc(s.liveProjects, func(p string) bool { return p == name })
	var done []string
	for _, st := range resp.GetRegionStatus() {
		if st.GetCode() != int32(codes.OK) {
			return fmt.Errorf("DeleteProject %s: %s answered %s (%s)", name, st.GetRegion(), codes.Code(st.GetCode()), st.GetMessage())
		}
		done = append(done, st.GetRegion())
	}
	if !slices.Equal(sorted(done), sorted(regions)) {
		return fmt.Errorf("DeleteProject %s: deleted in %v, want %v", name, sorted(done), sorted(regions))
	}
	if _, err := s.projects.GetProject(ctx, &nordlysv1.GetProjectRequest{Name: name}); status.Code(err) != codes.NotFound {
		return fmt.Errorf("GetProject %s after its delete: %v, want NotFound", name, err)
	}
	fmt.Printf("deleted %s in %v\n", name, sorted(done))
	return nil
}

// cleanup deletes, best effort, what a failed run left behind.
func (s *scenario) cleanup() {
	for _, name := range s.liveNetworks {
		ctx, cancel := call()
		_, _ = s.networks.DeleteNetwork(ctx, &nordlysv1.DeleteNetworkRequest{Name: name})
		cancel()
	}
	for _, name := range s.liveProjects {
		ctx, cancel := call()
		_, _ = s.projects.DeleteProject(ctx, &nordlysv1.DeleteProjectRequest{Name: name})
		cancel()
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
