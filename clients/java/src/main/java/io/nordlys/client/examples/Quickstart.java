package io.nordlys.client.examples;

import io.nordlys.client.Nordlys;
import java.util.UUID;
import nordlys.v1.Projects.CreateProjectRequest;
import nordlys.v1.Projects.DeleteProjectRequest;
import nordlys.v1.Projects.GetProjectRequest;
import nordlys.v1.Projects.Project;
import nordlys.v1.Regions.ListRegionsRequest;

/**
 * Quickstart: list the regions, create a project in one, read it back and
 * delete it.
 *
 * <pre>
 * NORDLYS_GRPC_ADDR=127.0.0.1:50051 NORDLYS_API_KEY=... \
 *     java -cp target/nordlys-client-all.jar io.nordlys.client.examples.Quickstart
 * </pre>
 */
public final class Quickstart {
    public static void main(String[] args) throws Exception {
        String addr = System.getenv().getOrDefault("NORDLYS_GRPC_ADDR", "127.0.0.1:50051");
        String key = System.getenv().getOrDefault("NORDLYS_API_KEY", "");
        // A local stack serves plaintext HTTP/2; in production use
        // Nordlys.tls("api.example.com:443", key).
        try (Nordlys api = Nordlys.plaintext(addr, key)) {
            api.regions().listRegions(ListRegionsRequest.getDefaultInstance()).getRegionsList()
                    .forEach(r -> System.out.println("region " + r.getName() + (r.getUp() ? "" : " (down)")));

            Project project = api.projects().createProject(CreateProjectRequest.newBuilder()
                    .setProjectId("quickstart-" + UUID.randomUUID().toString().substring(0, 6))
                    .setProject(Project.newBuilder().setDisplayName("Quickstart").addRegions("sto1"))
                    .build());
            project.getRegionStatusList().forEach(s ->
                    System.out.println("created " + project.getName() + " in " + s.getRegion() + ": code " + s.getCode()));

            Project got = api.projects().getProject(GetProjectRequest.newBuilder().setName(project.getName()).build());
            System.out.println("got " + got.getName() + " (" + got.getDisplayName() + ") in " + got.getRegionsList());

            api.projects().deleteProject(DeleteProjectRequest.newBuilder().setName(project.getName()).build());
            System.out.println("deleted " + project.getName());
        }
    }
}
