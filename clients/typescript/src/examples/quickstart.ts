// Quickstart: list the regions, create a project in one, read it back and
// delete it.
//
//   NORDLYS_GRPC_ADDR=127.0.0.1:50051 NORDLYS_API_KEY=... node dist/examples/quickstart.js

import { randomBytes } from "node:crypto";

import { createNordlys } from "../index.js";

const api = createNordlys({
  // A local stack serves plaintext HTTP/2; in production use
  // https://<gateway> and the connection is TLS.
  baseUrl: `http://${process.env.NORDLYS_GRPC_ADDR ?? "127.0.0.1:50051"}`,
  apiKey: process.env.NORDLYS_API_KEY ?? "",
});

const { regions } = await api.regions.listRegions({});
console.log("regions:", regions.map((r) => `${r.name}${r.up ? "" : " (down)"}`).join(", "));

const project = await api.projects.createProject({
  projectId: `quickstart-${randomBytes(3).toString("hex")}`,
  project: { displayName: "Quickstart", regions: ["sto1"] },
});
console.log(`created ${project.name}:`, project.regionStatus.map((s) => `${s.region} code ${s.code}`).join(", "));

const got = await api.projects.getProject({ name: project.name });
console.log(`got ${got.name} (${got.displayName}) in ${got.regions.join(", ")}`);

await api.projects.deleteProject({ name: project.name });
console.log(`deleted ${project.name}`);
