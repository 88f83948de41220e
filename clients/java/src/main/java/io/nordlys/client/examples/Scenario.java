package io.nordlys.client.examples;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.nordlys.client.Nordlys;
import java.security.SecureRandom;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import nordlys.v1.Common.RegionStatus;
import nordlys.v1.Networks.CreateNetworkRequest;
import nordlys.v1.Networks.DeleteNetworkRequest;
import nordlys.v1.Networks.GetNetworkRequest;
import nordlys.v1.Networks.ListNetworksRequest;
import nordlys.v1.Networks.Network;
import nordlys.v1.Projects.CreateProjectRequest;
import nordlys.v1.Projects.DeleteProjectRequest;
import nordlys.v1.Projects.DeleteProjectResponse;
import nordlys.v1.Projects.GetProjectRequest;
import nordlys.v1.Projects.ListProjectsRequest;
import nordlys.v1.Projects.ListProjectsResponse;
import nordlys.v1.Projects.Project;

/**
 * The client scenario every generated client runs against a live stack:
 * projects in two regions, paging one project at a time, a network, the
 * google.rpc.BadRequest of a bad CIDR, and deleting it all again. Prints each
 * step; exits non-zero at the first answer that is not as expected.
 *
 * <pre>
 * NORDLYS_GRPC_ADDR=127.0.0.1:50051 NORDLYS_API_KEY=... java -jar target/nordlys-client-all.jar
 * </pre>
 */
public final class Scenario {
    /** An answer that is not what the API promises. */
    static final class Mismatch extends RuntimeException {
        Mismatch(String message) {
            super(message);
        }
    }

    private static final Metadata.Key<byte[]> STATUS_DETAILS =
            Metadata.Key.of("grpc-status-details-bin", Metadata.BINARY_BYTE_MARSHALLER);

    private final Nordlys api;
    /** What this run created and has not deleted yet, newest first. */
    private final Deque<String> created = new ArrayDeque<>();

    private Scenario(Nordlys api) {
        this.api = api;
    }

    public static void main(String[] args) throws Exception {
        String addr = env("NORDLYS_GRPC_ADDR");
        String key = env("NORDLYS_API_KEY");
        try (Nordlys api = Nordlys.plaintext(addr, key)) {
            Scenario scenario = new Scenario(api);
            try {
                scenario.run();
            } catch (RuntimeException e) {
                scenario.cleanUp();
                throw e;
            }
            System.out.println("scenario: ok");
        } catch (Mismatch | StatusRuntimeException e) {
            System.err.println("scenario failed: " + e.getMessage());
            System.exit(1);
        }
    }

    private void run() {
        // Ids unique to this run, so it can share a stack with other callers.
        byte[] random = new byte[3];
        new SecureRandom().nextBytes(random);
        String run = "java" + HexFormat.of().formatHex(random);
        Map<String, List<String>> placements = new LinkedHashMap<>();
        placements.put(run + "-alpha", List.of("sto1", "osl1"));
        placements.put(run + "-bravo", List.of("sto1"));
        placements.put(run + "-charlie", List.of("osl1"));

        // Projects: one in both regions, one in each.
        List<String> mine = new ArrayList<>();
        placements.forEach((id, regions) -> {
            Project project = api.projects().createProject(CreateProjectRequest.newBuilder()
                    .setProjectId(id)
                    .setProject(Project.newBuilder().setDisplayName("Scenario " + id).addAllRegions(regions))
                    .build());
            created.push(project.getName());
            mine.add(project.getName());
            check(project.getName().equals("projects/" + id), "created " + project.getName() + ", want projects/" + id);
            check(sorted(project.getRegionsList()).equals(sorted(regions)), id + ": regions " + project.getRegionsList());
            check(sorted(ready(project.getRegionStatusList())).equals(sorted(regions)),
                    id + ": ready in " + ready(project.getRegionStatusList()) + ", want " + regions);
            System.out.println("created " + project.getName() + " in " + String.join(", ", sorted(ready(project.getRegionStatusList()))));
        });

        Project both = api.projects().getProject(GetProjectRequest.newBuilder().setName(mine.get(0)).build());
        check(sorted(both.getRegionsList()).equals(List.of("osl1", "sto1")), "get " + both.getName() + ": regions " + both.getRegionsList());
        check(sorted(ready(both.getRegionStatusList())).equals(List.of("osl1", "sto1")),
                "get " + both.getName() + ": ready in " + ready(both.getRegionStatusList()));

        // Paging: one project a page, following next_page_token to its end.
        List<String> seen = new ArrayList<>();
        String pageToken = "";
        int pages = 0;
        while (true) {
            ListProjectsResponse page = api.projects().listProjects(
                    ListProjectsRequest.newBuilder().setPageSize(1).setPageToken(pageToken).build());
            pages++;
            check(page.getProjectsCount() <= 1, "page " + pages + ": " + page.getProjectsCount() + " projects, asked for 1");
            check(page.getUnreachableList().isEmpty(), "page " + pages + ": unreachable " + page.getUnreachableList());
            page.getProjectsList().forEach(p -> seen.add(p.getName()));
            if (page.getNextPageToken().isEmpty()) {
                break;
            }
            check(pages <= seen.size() + 1, "paging does not end (" + pages + " pages for " + seen.size() + " projects)");
            pageToken = page.getNextPageToken();
        }
        check(new HashSet<>(seen).size() == seen.size(), "a project on two pages: " + seen);
        check(seen.equals(sorted(seen)), "not ordered by name: " + seen);
        for (String name : mine) {
            check(seen.contains(name), name + " is on no page: " + seen);
        }
        check(pages >= mine.size(), pages + " pages of 1 for " + seen.size() + " projects");
        System.out.println("listed " + seen.size() + " projects one a page in " + pages + " pages: " + String.join(", ", seen));

        // A network in the project, its gateway defaulting to the first host.
        String parent = mine.get(0);
        Network network = api.networks().createNetwork(CreateNetworkRequest.newBuilder()
                .setParent(parent)
                .setNetworkId("web")
                .setNetwork(Network.newBuilder().setRegion("sto1").setCidr("10.20.0.0/24"))
                .build());
        created.push(network.getName());
        check(network.getName().equals(parent + "/networks/web"), "created " + network.getName());
        check(network.getRegion().equals("sto1") && network.getCidr().equals("10.20.0.0/24"),
                "network " + network.getRegion() + " " + network.getCidr());
        check(network.getGatewayIp().equals("10.20.0.1"), "gateway " + network.getGatewayIp() + ", want 10.20.0.1");
        System.out.println("created " + network.getName() + " (" + network.getCidr() + " in " + network.getRegion()
                + ", gateway " + network.getGatewayIp() + ")");

        // A bad CIDR: INVALID_ARGUMENT with a google.rpc.BadRequest naming the field.
        StatusRuntimeException bad = expectError("a network with host bits set", Status.Code.INVALID_ARGUMENT,
                () -> api.networks().createNetwork(CreateNetworkRequest.newBuilder()
                        .setParent(parent)
                        .setNetworkId("bad")
                        .setNetwork(Network.newBuilder().setRegion("sto1").setCidr("10.20.0.1/24"))
                        .build()));
        List<BadRequest.FieldViolation> violations = Nordlys.fieldViolations(bad);
        BadRequest.FieldViolation cidr = violations.stream()
                .filter(v -> v.getField().equals("network.cidr"))
                .findFirst()
                .orElseThrow(() -> new Mismatch("no violation of network.cidr in " + violations));
        check(!cidr.getDescription().isEmpty(), "the network.cidr violation has no description");
        System.out.println("bad CIDR refused: " + bad.getStatus().getCode() + ", " + cidr.getField() + ": " + cidr.getDescription());

        // The same detail read by hand from the trailer, as any gRPC client
        // can: grpc-status-details-bin is a serialized google.rpc.Status.
        check(bad.getTrailers() != null && bad.getTrailers().containsKey(STATUS_DETAILS), "no grpc-status-details-bin trailer");
        List<String> fields = new ArrayList<>();
        try {
            com.google.rpc.Status status = com.google.rpc.Status.parseFrom(bad.getTrailers().get(STATUS_DETAILS));
            check(status.getCode() == Status.Code.INVALID_ARGUMENT.value(), "google.rpc.Status code " + status.getCode());
            for (Any detail : status.getDetailsList()) {
                if (detail.is(BadRequest.class)) {
                    detail.unpack(BadRequest.class).getFieldViolationsList().forEach(v -> fields.add(v.getField()));
                }
            }
        } catch (InvalidProtocolBufferException e) {
            throw new Mismatch("grpc-status-details-bin is not a google.rpc.Status: " + e.getMessage());
        }
        check(fields.contains("network.cidr"), "trailer names " + fields + ", not network.cidr");

        List<String> networks = api.networks().listNetworks(ListNetworksRequest.newBuilder().setParent(parent).build())
                .getNetworksList().stream().map(Network::getName).toList();
        check(networks.equals(List.of(network.getName())), "networks " + networks + ": the bad one was created");

        // Deleting: the network, then each project in all of its regions.
        api.networks().deleteNetwork(DeleteNetworkRequest.newBuilder().setName(network.getName()).build());
        created.remove(network.getName());
        expectError("the deleted network", Status.Code.NOT_FOUND,
                () -> api.networks().getNetwork(GetNetworkRequest.newBuilder().setName(network.getName()).build()));
        System.out.println("deleted " + network.getName());

        placements.forEach((id, regions) -> {
            String name = "projects/" + id;
            DeleteProjectResponse deleted = api.projects().deleteProject(DeleteProjectRequest.newBuilder().setName(name).build());
            created.remove(name);
            List<String> done = deleted.getRegionStatusList().stream()
                    .filter(s -> s.getCode() == 0)
                    .map(RegionStatus::getRegion)
                    .toList();
            check(sorted(done).equals(sorted(regions)), "delete " + name + ": done in " + done + ", want " + regions);
            expectError("the deleted " + name, Status.Code.NOT_FOUND,
                    () -> api.projects().getProject(GetProjectRequest.newBuilder().setName(name).build()));
            System.out.println("deleted " + name + " in " + String.join(", ", sorted(done)));
        });

        List<String> left = api.projects().listProjects(ListProjectsRequest.newBuilder().setPageSize(1000).build())
                .getProjectsList().stream().map(Project::getName).toList();
        check(mine.stream().noneMatch(left::contains), "still listed after delete: " + left);
    }

    /** Best effort after a failure: leave nothing of this run behind. */
    private void cleanUp() {
        for (String name : created) {
            try {
                if (name.contains("/networks/")) {
                    api.networks().deleteNetwork(DeleteNetworkRequest.newBuilder().setName(name).build());
                } else {
                    api.projects().deleteProject(DeleteProjectRequest.newBuilder().setName(name).build());
                }
            } catch (StatusRuntimeException ignored) {
                // The failure being reported matters more than this one.
            }
        }
    }

    /** Runs {@code call}, which must fail with {@code code}; returns the error. */
    private static StatusRuntimeException expectError(String what, Status.Code code, Supplier<?> call) {
        Object answer;
        try {
            answer = call.get();
        } catch (StatusRuntimeException e) {
            check(e.getStatus().getCode() == code, what + ": " + e.getStatus() + ", want " + code);
            return e;
        }
        throw new Mismatch(what + ": accepted: " + answer);
    }

    /** The regions in which {@code statuses} says READY with code 0. */
    private static List<String> ready(List<RegionStatus> statuses) {
        return statuses.stream()
                .filter(s -> s.getState() == RegionStatus.State.READY && s.getCode() == 0)
                .map(RegionStatus::getRegion)
                .toList();
    }

    private static List<String> sorted(List<String> xs) {
        return xs.stream().sorted().toList();
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new Mismatch(what);
        }
    }

    private static String env(String name) {
        String value = System.getenv(name);
        if (value == null || value.isEmpty()) {
            System.err.println("scenario failed: " + name + " is not set");
            System.exit(2);
        }
        return value;
    }
}
