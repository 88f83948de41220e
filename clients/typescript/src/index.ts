// The Nordlys client: typed gRPC clients for every public service, generated
// from proto/proto with protobuf-es and called through Connect's gRPC
// transport for Node (HTTP/2).

import type * as http2 from "node:http2";

import {
  type Client,
  ConnectError,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  type BadRequest,
  BadRequestSchema,
  type BadRequest_FieldViolation,
} from "./gen/google/rpc/error_details_pb.js";
import { AccessRuleService } from "./gen/nordlys/v1/access_rules_pb.js";
import { EnvironmentService } from "./gen/nordlys/v1/environments_pb.js";
import { EventService } from "./gen/nordlys/v1/events_pb.js";
import { MembershipService } from "./gen/nordlys/v1/memberships_pb.js";
import { NetworkService } from "./gen/nordlys/v1/networks_pb.js";
import { OrganizationService } from "./gen/nordlys/v1/organizations_pb.js";
import { ProjectService } from "./gen/nordlys/v1/projects_pb.js";
import { QuotaService } from "./gen/nordlys/v1/quotas_pb.js";
import { RegionService } from "./gen/nordlys/v1/regions_pb.js";
import { UserService } from "./gen/nordlys/v1/users_pb.js";

export * from "./gen/nordlys/v1/access_rules_pb.js";
export * from "./gen/nordlys/v1/common_pb.js";
export * from "./gen/nordlys/v1/environments_pb.js";
export * from "./gen/nordlys/v1/events_pb.js";
export * from "./gen/nordlys/v1/memberships_pb.js";
export * from "./gen/nordlys/v1/networks_pb.js";
export * from "./gen/nordlys/v1/organizations_pb.js";
export * from "./gen/nordlys/v1/projects_pb.js";
export * from "./gen/nordlys/v1/quotas_pb.js";
export * from "./gen/nordlys/v1/regions_pb.js";
export * from "./gen/nordlys/v1/users_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export * from "./gen/google/rpc/status_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

/** Where and as whom to call the API. */
export interface NordlysOptions {
  /**
   * The gateway's gRPC endpoint: `https://api.example.com` in production
   * (TLS), or `http://127.0.0.1:50051` for a local stack (plaintext HTTP/2).
   */
  baseUrl: string;
  /** An API key of the organization; sent as `authorization: Bearer <key>`. */
  apiKey: string;
  /** A deadline for every call, in milliseconds (default: none). */
  timeoutMs?: number;
  /**
   * Options for Node's `http2.connect`, such as `ca` for a private CA or a
   * client certificate for mutual TLS.
   */
  nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
}

/** One client per public service, sharing one HTTP/2 connection. */
export interface Nordlys {
  projects: Client<typeof ProjectService>;
  networks: Client<typeof NetworkService>;
  accessRules: Client<typeof AccessRuleService>;
  regions: Client<typeof RegionService>;
  organizations: Client<typeof OrganizationService>;
  users: Client<typeof UserService>;
  memberships: Client<typeof MembershipService>;
  quotas: Client<typeof QuotaService>;
  environments: Client<typeof EnvironmentService>;
  events: Client<typeof EventService>;
}

/** An interceptor that authenticates every call with an API key. */
export function bearer(apiKey: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${apiKey}`);
    return next(req);
  };
}

/** The clients of every service, over one gRPC transport. */
export function createNordlys(options: NordlysOptions): Nordlys {
  // Connect's gRPC transport always speaks HTTP/2: over TLS for https://
  // URLs, and with prior knowledge (h2c) for http:// ones, as tonic serves.
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors: [bearer(options.apiKey)],
    defaultTimeoutMs: options.timeoutMs,
    nodeOptions: options.nodeOptions,
  });
  return {
    projects: createClient(ProjectService, transport),
    networks: createClient(NetworkService, transport),
    accessRules: createClient(AccessRuleService, transport),
    regions: createClient(RegionService, transport),
    organizations: createClient(OrganizationService, transport),
    users: createClient(UserService, transport),
    memberships: createClient(MembershipService, transport),
    quotas: createClient(QuotaService, transport),
    environments: createClient(EnvironmentService, transport),
    events: createClient(EventService, transport),
  };
}

/**
 * The google.rpc.BadRequest an INVALID_ARGUMENT error carries (decoded from
 * its grpc-status-details-bin trailer), or undefined when it has none.
 */
export function badRequest(err: unknown): BadRequest | undefined {
  if (!(err instanceof ConnectError)) {
    return undefined;
  }
  return err.findDetails(BadRequestSchema)[0];
}

/** The field violations of a bad request: which field, and why. */
export function fieldViolations(err: unknown): BadRequest_FieldViolation[] {
  return badRequest(err)?.fieldViolations ?? [];
}
