// The client scenario every generated client runs against a live stack:
// projects in two regions, paging one project at a time, a network, the
// google.rpc.BadRequest of a bad CIDR, and deleting it all again. Prints
// each step; exits non-zero at the first answer that is not as expected.
//
//   NORDLYS_GRPC_ADDR=127.0.0.1:50051 NORDLYS_API_KEY=... node dist/examples/scenario.js

import { randomBytes } from "node:crypto";

import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";

import {
  BadRequestSchema,
  Code,
  ConnectError,
  createNordlys,
  fieldViolations,
  type Nordlys,
  type Project,
  RegionStatus_State,
  type RegionStatus,
  StatusSchema,
} from "../index.js";

class Mismatch extends Error {}

function check(ok: boolean, what: string): asserts ok {
  if (!ok) {
    throw new Mismatch(what);
  }
}

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Mismatch(`${name} is not set`);
  }
  return value;
}

const sorted = (xs: readonly string[]) => [...xs].sort();
const same = (a: readonly string[], b: readonly string[]) =>
  JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

/** The regions in which `statuses` says READY with code 0. */
function ready(statuses: readonly RegionStatus[]): string[] {
  return statuses
    .filter((s) => s.state === RegionStatus_State.READY && s.code === 0)
    .map((s) => s.region);
}

/** Calls `call`, which must fail with `code`; returns the error. */
async function expectError(
  what: string,
  code: Code,
  call: () => Promise<unknown>,
): Promise<ConnectError> {
  try {
    const answer = await call();
    throw new Mismatch(`${what}: accepted: ${JSON.stringify(answer)}`);
  } catch (err) {
    if (err instanceof Mismatch) {
      throw err;
    }
    const e = ConnectError.from(err);
    check(e.code === code, `${what}: ${Code[e.code]} (${e.rawMessage}), want ${Code[code]}`);
    return e;
  }
}

async function run(api: Nordlys, created: Set<string>): Promise<void> {
  // Ids unique to this run, so it can share a stack with other callers.
  const run = `ts${randomBytes(3).toString("hex")}`;
  const placements: [string, string[]][] = [
    [`${run}-alpha`, ["sto1", "osl1"]],
    [`${run}-bravo`, ["sto1"]],
    [`${run}-charlie`, ["osl1"]],
  ];

  // Projects: one in both regions, one in each.
  for (const [id, regions] of placements) {
    const project = await api.projects.createProject({
      projectId: id,
      project: { displayName: `Scenario ${id}`, regions },
    });
    created.add(project.name);
    check(project.name === `projects/${id}`, `created ${project.name}, want projects/${id}`);
    check(same(project.regions, regions), `${id}: regions ${project.regions}`);
    check(
      same(ready(project.regionStatus), regions),
      `${id}: ready in ${ready(project.regionStatus)}, want ${regions}`,
    );
    console.log(`created ${project.name} in ${sorted(ready(project.regionStatus)).join(", ")}`);
  }
  const mine = placements.map(([id]) => `projects/${id}`);

  const both = await api.projects.getProject({ name: mine[0] });
  check(same(both.regions, ["sto1", "osl1"]), `get ${both.name}: regions ${both.regions}`);
  check(
    same(ready(both.regionStatus), ["sto1", "osl1"]),
    `get ${both.name}: ready in ${ready(both.regionStatus)}`,
  );

  // Paging: one project a page, following next_page_token to its end.
  const seen: string[] = [];
  let pageToken = "";
  let pages = 0;
  for (;;) {
    const page = await api.projects.listProjects({ pageSize: 1, pageToken });
    pages++;
    check(page.projects.length <= 1, `page ${pages}: ${page.projects.length} projects, asked for 1`);
    check(page.unreachable.length === 0, `page ${pages}: unreachable ${page.unreachable}`);
    seen.push(...page.projects.map((p: Project) => p.name));
    if (page.nextPageToken === "") {
      break;
    }
    check(pages <= seen.length + 1, `paging does not end (${pages} pages for ${seen.length} projects)`);
    pageToken = page.nextPageToken;
  }
  check(new Set(seen).size === seen.length, `a project on two pages: ${seen}`);
  check(JSON.stringify(seen) === JSON.stringify(sorted(seen)), `not ordered by name: ${seen}`);
  for (const name of mine) {
    check(seen.includes(name), `${name} is on no page: ${seen}`);
  }
  check(pages >= mine.length, `${pages} pages of 1 for ${seen.length} projects`);
  console.log(`listed ${seen.length} projects one a page in ${pages} pages: ${seen.join(", ")}`);

  // A network in the project, its gateway defaulting to the first host.
  const parent = mine[0];
  const network = await api.networks.createNetwork({
    parent,
    networkId: "web",
    network: { region: "sto1", cidr: "10.20.0.0/24" },
  });
  created.add(network.name);
  check(network.name === `${parent}/networks/web`, `created ${network.name}`);
  check(network.region === "sto1" && network.cidr === "10.20.0.0/24", `network ${network.region} ${network.cidr}`);
  check(network.gatewayIp === "10.20.0.1", `gateway ${network.gatewayIp}, want 10.20.0.1`);
  console.log(`created ${network.name} (${network.cidr} in ${network.region}, gateway ${network.gatewayIp})`);

  // A bad CIDR: INVALID_ARGUMENT with a google.rpc.BadRequest naming the field.
  const bad = await expectError("a network with host bits set", Code.InvalidArgument, () =>
    api.networks.createNetwork({
      parent,
      networkId: "bad",
      network: { region: "sto1", cidr: "10.20.0.1/24" },
    }),
  );
  const violations = fieldViolations(bad);
  const cidr = violations.find((v) => v.field === "network.cidr");
  check(cidr !== undefined, `no violation of network.cidr in ${JSON.stringify(violations)}`);
  check(cidr.description !== "", "the network.cidr violation has no description");
  console.log(`bad CIDR refused: ${Code[bad.code]}, ${cidr.field}: ${cidr.description}`);

  // The same detail read by hand from the trailer, as any gRPC client can:
  // grpc-status-details-bin is a base64 google.rpc.Status.
  const trailer = bad.metadata.get("grpc-status-details-bin");
  check(trailer !== null, "no grpc-status-details-bin trailer");
  const status = fromBinary(StatusSchema, Buffer.from(trailer, "base64"));
  check(status.code === Code.InvalidArgument, `google.rpc.Status code ${status.code}`);
  const fields = status.details
    .map((any) => anyUnpack(any, BadRequestSchema))
    .flatMap((b) => b?.fieldViolations.map((v) => v.field) ?? []);
  check(fields.includes("network.cidr"), `trailer names ${fields}, not network.cidr`);

  const networks = await api.networks.listNetworks({ parent });
  const names = networks.networks.map((n) => n.name);
  check(same(names, [network.name]), `networks ${names}: the bad one was created`);

  // Deleting: the network, then each project in all of its regions.
  await api.networks.deleteNetwork({ name: network.name });
  created.delete(network.name);
  await expectError("the deleted network", Code.NotFound, () =>
    api.networks.getNetwork({ name: network.name }),
  );
  console.log(`deleted ${network.name}`);

  for (const [id, regions] of placements) {
    const name = `projects/${id}`;
    const deleted = await api.projects.deleteProject({ name });
    created.delete(name);
    const outcome = deleted.regionStatus.filter((s) => s.code === 0).map((s) => s.region);
    check(same(outcome, regions), `delete ${name}: done in ${outcome}, want ${regions}`);
    await expectError(`the deleted ${name}`, Code.NotFound, () => api.projects.getProject({ name }));
    console.log(`deleted ${name} in ${sorted(outcome).join(", ")}`);
  }

  const left = (await api.projects.listProjects({ pageSize: 1000 })).projects.map((p) => p.name);
  check(!mine.some((name) => left.includes(name)), `still listed after delete: ${left}`);
}

/** Best effort after a failure: leave no project of this run behind. */
async function cleanUp(api: Nordlys, created: Set<string>): Promise<void> {
  for (const name of [...created].reverse()) {
    const call = name.includes("/networks/")
      ? api.networks.deleteNetwork({ name })
      : api.projects.deleteProject({ name });
    await call.catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const api = createNordlys({
    baseUrl: `http://${env("NORDLYS_GRPC_ADDR")}`,
    apiKey: env("NORDLYS_API_KEY"),
    timeoutMs: 30_000,
  });
  const created = new Set<string>();
  try {
    await run(api, created);
  } catch (err) {
    await cleanUp(api, created);
    throw err;
  }
  console.log("scenario: ok");
}

main().catch((err: unknown) => {
  console.error(`scenario failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
