"""Lists the regions and the projects an API key can see.

Against a gateway with TLS, and against a local one without:

    NORDLYS_GRPC_ADDR=api.example.com:443 NORDLYS_API_KEY=... python examples/quickstart.py
    NORDLYS_GRPC_ADDR=127.0.0.1:50051 NORDLYS_API_KEY=... python examples/quickstart.py --plaintext
"""

import os
import sys

import nordlys_client
from nordlys.v1 import projects_pb2, projects_pb2_grpc, regions_pb2, regions_pb2_grpc


def main() -> None:
    addr, key = os.environ.get("NORDLYS_GRPC_ADDR"), os.environ.get("NORDLYS_API_KEY")
    if not addr or not key:
        sys.exit("set NORDLYS_GRPC_ADDR (host:port) and NORDLYS_API_KEY")
    plaintext = "--plaintext" in sys.argv[1:]

    with nordlys_client.channel(addr, key, plaintext=plaintext) as channel:
        regions = regions_pb2_grpc.RegionServiceStub(channel)
        for region in regions.ListRegions(regions_pb2.ListRegionsRequest(), timeout=30).regions:
            print(f"region {region.name} up={region.up} kind={region.kind}")

        projects = projects_pb2_grpc.ProjectServiceStub(channel)
        request = projects_pb2.ListProjectsRequest(page_size=100)
        while True:
            page = projects.ListProjects(request, timeout=30)
            for project in page.projects:
                print(f"{project.name} {project.display_name!r} in {list(project.regions)}")
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token


if __name__ == "__main__":
    main()
