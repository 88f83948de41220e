"""Runs the clients' shared scenario against a live gateway and exits non-zero
on the first answer that is not what the API promises: projects in two
regions, ListProjects one page at a time, a network, the google.rpc.BadRequest
of a bad CIDR, and deleting it all again.

It reads NORDLYS_GRPC_ADDR (host:port, plaintext) and NORDLYS_API_KEY.
"""

from __future__ import annotations

import os
import secrets
import sys

import grpc

import nordlys_client
from nordlys.v1 import (
    common_pb2,
    networks_pb2,
    networks_pb2_grpc,
    projects_pb2,
    projects_pb2_grpc,
)

# Bounds each call, so that a hung gateway fails the scenario instead of
# stalling it.
TIMEOUT = 30


class Mismatch(Exception):
    """An answer other than the API promises."""


class Scenario:
    def __init__(self, channel: grpc.Channel) -> None:
        self.projects = projects_pb2_grpc.ProjectServiceStub(channel)
        self.networks = networks_pb2_grpc.NetworkServiceStub(channel)
        # What was created and not yet deleted, for the cleanup after a failure.
        self.live_projects: list[str] = []
        self.live_networks: list[str] = []

    def run(self) -> None:
        # A fresh suffix keeps the ids apart from earlier runs on the same stack.
        suffix = secrets.token_hex(4)
        placements = {
            f"py-{suffix}-a": ["sto1", "osl1"],
            f"py-{suffix}-b": ["sto1"],
            f"py-{suffix}-c": ["osl1"],
        }
        for project_id, regions in placements.items():
            self.create_project(project_id, regions)
        self.list_one_per_page(list(placements))

        project = f"projects/py-{suffix}-a"
        self.create_network(project)
        self.bad_cidr(project)

        for name in list(self.live_networks):
            self.delete_network(name)
        for project_id, regions in placements.items():
            self.delete_project(f"projects/{project_id}", regions)

    def create_project(self, project_id: str, regions: list[str]) -> None:
        try:
            project = self.projects.CreateProject(
                projects_pb2.CreateProjectRequest(
                    project_id=project_id,
                    request_id=f"scenario-{project_id}",
                    project=projects_pb2.Project(
                        display_name=f"Python scenario {project_id}", regions=regions
                    ),
                ),
                timeout=TIMEOUT,
            )
        except grpc.RpcError as e:
            raise Mismatch(f"CreateProject {project_id}: {describe(e)}") from e
        self.live_projects.append(project.name)
        expect(project.name, f"projects/{project_id}", f"CreateProject {project_id}: name")
        expect(sorted(project.regions), sorted(regions), f"CreateProject {project_id}: regions")
        for status in project.region_status:
            if status.state != common_pb2.RegionStatus.READY:
                state = common_pb2.RegionStatus.State.Name(status.state)
                raise Mismatch(
                    f"CreateProject {project_id}: {status.region} is {state} ({status.message})"
                )
        ready = sorted(s.region for s in project.region_status)
        expect(ready, sorted(regions), f"CreateProject {project_id}: READY in")
        print(f"created {project.name} in {ready}")

    def list_one_per_page(self, project_ids: list[str]) -> None:
        """Pages through ListProjects with page_size 1 and checks that every
        project comes exactly once, in name order, ours among them."""
        seen: list[str] = []
        request = projects_pb2.ListProjectsRequest(page_size=1)
        pages = 0
        while True:
            try:
                page = self.projects.ListProjects(request, timeout=TIMEOUT)
            except grpc.RpcError as e:
                raise Mismatch(f"ListProjects page {pages + 1}: {describe(e)}") from e
            pages += 1
            if len(page.projects) > 1:
                raise Mismatch(
                    f"ListProjects page {pages}: {len(page.projects)} projects with page_size 1"
                )
            if page.unreachable:
                raise Mismatch(f"ListProjects page {pages}: unreachable {list(page.unreachable)}")
            for project in page.projects:
                if project.name in seen:
                    raise Mismatch(f"ListProjects page {pages}: {project.name} seen twice")
                seen.append(project.name)
            if not page.next_page_token:
                break
            # A token that never runs out would loop forever: no tenant here
            # has anywhere near this many projects.
            if pages >= 1000:
                raise Mismatch("ListProjects: still a next_page_token after 1000 pages")
            request.page_token = page.next_page_token
        for project_id in project_ids:
            if f"projects/{project_id}" not in seen:
                raise Mismatch(f"ListProjects: projects/{project_id} not listed (saw {seen})")
        if seen != sorted(seen):
            raise Mismatch(f"ListProjects: not ordered by name: {seen}")
        if pages < len(project_ids):
            raise Mismatch(f"ListProjects: {len(seen)} projects in {pages} pages of 1")
        print(f"listed {len(seen)} projects in {pages} pages of 1, each once")

    def create_network(self, project: str) -> None:
        try:
            network = self.networks.CreateNetwork(
                networks_pb2.CreateNetworkRequest(
                    parent=project,
                    network_id="net1",
                    network=networks_pb2.Network(region="sto1", cidr="10.20.0.0/24"),
                ),
                timeout=TIMEOUT,
            )
        except grpc.RpcError as e:
            raise Mismatch(f"CreateNetwork: {describe(e)}") from e
        self.live_networks.append(network.name)
        expect(network.name, f"{project}/networks/net1", "CreateNetwork: name")
        expect(network.region, "sto1", "CreateNetwork: region")
        expect(network.cidr, "10.20.0.0/24", "CreateNetwork: cidr")
        # The gateway defaults to the subnet's first host address.
        expect(network.gateway_ip, "10.20.0.1", "CreateNetwork: gateway_ip")
        print(
            f"created {network.name}: {network.cidr} in {network.region},"
            f" gateway {network.gateway_ip}"
        )

    def bad_cidr(self, project: str) -> None:
        """Creates a network whose CIDR does not parse and reads which field
        the google.rpc.BadRequest in the status details blames."""
        try:
            network = self.networks.CreateNetwork(
                networks_pb2.CreateNetworkRequest(
                    parent=project,
                    network_id="bad",
                    network=networks_pb2.Network(region="sto1", cidr="10.300.0.0/24"),
                ),
                timeout=TIMEOUT,
            )
        except grpc.RpcError as e:
            error = e
        else:
            self.live_networks.append(network.name)
            raise Mismatch(f"CreateNetwork with CIDR 10.300.0.0/24 succeeded: {network.name}")
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise Mismatch(
                f"CreateNetwork with a bad CIDR: {describe(error)}, want INVALID_ARGUMENT"
            )
        bad = nordlys_client.bad_request(error)
        if bad is None:
            raise Mismatch(
                f"CreateNetwork with a bad CIDR: no google.rpc.BadRequest: {describe(error)}"
            )
        fields = [v.field for v in bad.field_violations]
        # The gateway names the field as the request spelled it.
        expect(fields, ["network.cidr"], "CreateNetwork with a bad CIDR: violations of")
        print(f"bad CIDR refused: {fields[0]}: {bad.field_violations[0].description}")

    def delete_network(self, name: str) -> None:
        try:
            self.networks.DeleteNetwork(
                networks_pb2.DeleteNetworkRequest(name=name), timeout=TIMEOUT
            )
        except grpc.RpcError as e:
            raise Mismatch(f"DeleteNetwork {name}: {describe(e)}") from e
        self.live_networks.remove(name)
        expect_not_found(
            lambda: self.networks.GetNetwork(
                networks_pb2.GetNetworkRequest(name=name), timeout=TIMEOUT
            ),
            f"GetNetwork {name} after its delete",
        )
        print(f"deleted {name}")

    def delete_project(self, name: str, regions: list[str]) -> None:
        try:
            response = self.projects.DeleteProject(
                projects_pb2.DeleteProjectRequest(name=name), timeout=TIMEOUT
            )
        except grpc.RpcError as e:
            raise Mismatch(f"DeleteProject {name}: {describe(e)}") from e
        self.live_projects.remove(name)
        for status in response.region_status:
            if status.code != grpc.StatusCode.OK.value[0]:
                raise Mismatch(
                    f"DeleteProject {name}: {status.region} answered code {status.code}"
                    f" ({status.message})"
                )
        done = sorted(s.region for s in response.region_status)
        expect(done, sorted(regions), f"DeleteProject {name}: deleted in")
        expect_not_found(
            lambda: self.projects.GetProject(
                projects_pb2.GetProjectRequest(name=name), timeout=TIMEOUT
            ),
            f"GetProject {name} after its delete",
        )
        print(f"deleted {name} in {done}")

    def cleanup(self) -> None:
        """Deletes, best effort, what a failed run left behind."""
        for name in self.live_networks:
            try:
                self.networks.DeleteNetwork(
                    networks_pb2.DeleteNetworkRequest(name=name), timeout=TIMEOUT
                )
            except grpc.RpcError:
                pass
        for name in self.live_projects:
            try:
                self.projects.DeleteProject(
                    projects_pb2.DeleteProjectRequest(name=name), timeout=TIMEOUT
                )
            except grpc.RpcError:
                pass


def expect(got: object, want: object, what: str) -> None:
    if got != want:
        raise Mismatch(f"{what} {got!r}, want {want!r}")


def expect_not_found(call, what: str) -> None:
    try:
        call()
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return
        raise Mismatch(f"{what}: {describe(e)}, want NOT_FOUND") from e
    raise Mismatch(f"{what}: found, want NOT_FOUND")


def describe(error: grpc.RpcError) -> str:
    return f"{error.code().name}: {error.details()}"


def main() -> int:
    addr, key = os.environ.get("NORDLYS_GRPC_ADDR"), os.environ.get("NORDLYS_API_KEY")
    if not addr or not key:
        print("set NORDLYS_GRPC_ADDR (host:port) and NORDLYS_API_KEY", file=sys.stderr)
        return 2
    with nordlys_client.channel(addr, key, plaintext=True) as channel:
        scenario = Scenario(channel)
        try:
            scenario.run()
        except Mismatch as e:
            print(f"FAIL: {e}", file=sys.stderr)
            return 1
        finally:
            scenario.cleanup()
    print("scenario passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
