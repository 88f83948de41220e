package io.nordlys.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import io.grpc.Channel;
import io.grpc.ClientInterceptors;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.TlsChannelCredentials;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import nordlys.v1.AccessRuleServiceGrpc;
import nordlys.v1.EnvironmentServiceGrpc;
import nordlys.v1.EventServiceGrpc;
import nordlys.v1.MembershipServiceGrpc;
import nordlys.v1.NetworkServiceGrpc;
import nordlys.v1.OrganizationServiceGrpc;
import nordlys.v1.ProjectServiceGrpc;
import nordlys.v1.QuotaServiceGrpc;
import nordlys.v1.RegionServiceGrpc;
import nordlys.v1.UserServiceGrpc;

/**
 * A connection to the Nordlys API: blocking stubs for every public service,
 * each call authenticated with an API key and bounded by a deadline.
 *
 * <pre>{@code
 * try (Nordlys api = Nordlys.tls("api.example.com:443", apiKey)) {
 *     Project p = api.projects().getProject(
 *         GetProjectRequest.newBuilder().setName("projects/web").build());
 * }
 * }</pre>
 */
public final class Nordlys implements AutoCloseable {
    private static final Metadata.Key<String> AUTHORIZATION =
            Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

    private final ManagedChannel managed;
    private final Channel channel;
    private final Duration timeout;

    /** Calls over {@code channel} as the holder of {@code apiKey}; closing this closes it. */
    public Nordlys(ManagedChannel channel, String apiKey, Duration timeout) {
        this.managed = channel;
        this.channel = ClientInterceptors.intercept(channel, bearer(apiKey));
        this.timeout = timeout;
    }

    /** The gateway at {@code target} (host:port) over TLS, as in production. */
    public static Nordlys tls(String target, String apiKey) {
        return new Nordlys(
                Grpc.newChannelBuilder(target, TlsChannelCredentials.create()).build(),
                apiKey,
                Duration.ofSeconds(30));
    }

    /**
     * The gateway at {@code target} (host:port) in plaintext HTTP/2: only for
     * a local stack, since the API key would cross the network readable.
     */
    public static Nordlys plaintext(String target, String apiKey) {
        return new Nordlys(
                Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build(),
                apiKey,
                Duration.ofSeconds(30));
    }

    /** An interceptor that sends {@code authorization: Bearer <apiKey>} with every call. */
    public static io.grpc.ClientInterceptor bearer(String apiKey) {
        Metadata headers = new Metadata();
        headers.put(AUTHORIZATION, "Bearer " + apiKey);
        return MetadataUtils.newAttachHeadersInterceptor(headers);
    }

    // A deadline is fixed when a stub is made, so each call gets a fresh stub.

    public ProjectServiceGrpc.ProjectServiceBlockingStub projects() {
        return ProjectServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public NetworkServiceGrpc.NetworkServiceBlockingStub networks() {
        return NetworkServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public AccessRuleServiceGrpc.AccessRuleServiceBlockingStub accessRules() {
        return AccessRuleServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public RegionServiceGrpc.RegionServiceBlockingStub regions() {
        return RegionServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public OrganizationServiceGrpc.OrganizationServiceBlockingStub organizations() {
        return OrganizationServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public UserServiceGrpc.UserServiceBlockingStub users() {
        return UserServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public MembershipServiceGrpc.MembershipServiceBlockingStub memberships() {
        return MembershipServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public QuotaServiceGrpc.QuotaServiceBlockingStub quotas() {
        return QuotaServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    public EnvironmentServiceGrpc.EnvironmentServiceBlockingStub environments() {
        return EnvironmentServiceGrpc.newBlockingStub(channel).withDeadlineAfter(millis(), TimeUnit.MILLISECONDS);
    }

    /**
     * No deadline: WatchEvents streams for as long as the caller reads. Give
     * ListEvents one with {@code withDeadlineAfter}.
     */
    public EventServiceGrpc.EventServiceBlockingStub events() {
        return EventServiceGrpc.newBlockingStub(channel);
    }

    /** The channel with authentication, for async or future stubs. */
    public Channel channel() {
        return channel;
    }

    private long millis() {
        return timeout.toMillis();
    }

    /**
     * The google.rpc.BadRequest an INVALID_ARGUMENT error carries in its
     * grpc-status-details-bin trailer, if any.
     */
    public static Optional<BadRequest> badRequest(Throwable error) {
        com.google.rpc.Status status = StatusProto.fromThrowable(error);
        if (status == null) {
            return Optional.empty();
        }
        for (Any detail : status.getDetailsList()) {
            if (detail.is(BadRequest.class)) {
                try {
                    return Optional.of(detail.unpack(BadRequest.class));
                } catch (InvalidProtocolBufferException e) {
                    // A detail that claims to be a BadRequest but is not one
                    // is the server's bug; report it as no detail.
                    return Optional.empty();
                }
            }
        }
        return Optional.empty();
    }

    /** The field violations of a bad request: which field, and why. */
    public static List<BadRequest.FieldViolation> fieldViolations(Throwable error) {
        return badRequest(error).map(BadRequest::getFieldViolationsList).orElse(List.of());
    }

    @Override
    public void close() throws InterruptedException {
        managed.shutdown();
        if (!managed.awaitTermination(5, TimeUnit.SECONDS)) {
            managed.shutdownNow();
        }
    }
}
