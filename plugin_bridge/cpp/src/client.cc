// The Mirage C++ client (see include/mirage/client.h). Only this file sees the generated code.
#include "mirage/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>

#include "mirage/v1/mirage.grpc.pb.h"

namespace mirage {
namespace {

namespace pb = ::mirage::v1;

constexpr uint32_t kProtocolMajor = 1;

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

void Check(const grpc::Status& status) {
  if (!status.ok()) {
    throw Error(status.error_code(), CodeName(status.error_code()), status.error_message());
  }
}

pb::PoseConvention ConventionOf(const std::string& name) {
  std::string upper = "POSE_CONVENTION_";
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  pb::PoseConvention value;
  if (!pb::PoseConvention_Parse(upper, &value) || value == pb::POSE_CONVENTION_UNSPECIFIED) {
    throw Error(grpc::INVALID_ARGUMENT, "INVALID_ARGUMENT",
                "unknown pose convention '" + name +
                    "': use opencv, opengl, unity, unreal, godot, arkit, arcore or panda3d");
  }
  return value;
}

void ToProto(const Pose& pose, pb::Pose* out) {
  out->mutable_position()->set_x(pose.position[0]);
  out->mutable_position()->set_y(pose.position[1]);
  out->mutable_position()->set_z(pose.position[2]);
  out->mutable_rotation()->set_w(pose.rotation_wxyz[0]);
  out->mutable_rotation()->set_x(pose.rotation_wxyz[1]);
  out->mutable_rotation()->set_y(pose.rotation_wxyz[2]);
  out->mutable_rotation()->set_z(pose.rotation_wxyz[3]);
}

MemoryStats FromProto(const pb::MemoryStats& m) {
  MemoryStats out;
  out.points = m.points();
  out.bytes_used = m.bytes_used();
  out.budget_bytes = m.budget_bytes();
  out.frames_ingested = m.frames_ingested();
  out.chunks = m.chunks();
  return out;
}

void RgbOf(const pb::Image& image, Frame* out) {
  if (image.encoding() != pb::FRAME_ENCODING_RAW_RGB8 && image.encoding() != pb::FRAME_ENCODING_UNSPECIFIED) {
    throw Error(grpc::FAILED_PRECONDITION, "FAILED_PRECONDITION",
                "the server sent an encoded image; this client asks for raw RGB8 frames");
  }
  out->width = image.width();
  out->height = image.height();
  const std::string& data = image.data();
  if (data.size() != static_cast<size_t>(out->width) * out->height * 3) {
    throw Error(grpc::DATA_LOSS, "DATA_LOSS", "a frame's RGB bytes do not match its size");
  }
  out->rgb.assign(data.begin(), data.end());
}

Frame FromProto(const pb::Frame& f) {
  Frame out;
  out.sequence = f.sequence();
  out.frame_index = f.frame_index();
  RgbOf(f.rgb(), &out);
  out.coverage = f.coverage();
  out.server_received_us = f.server_received_us();
  out.server_sent_us = f.server_sent_us();
  out.server_total_ms = f.timings().total_ms();
  out.memory = FromProto(f.memory());
  return out;
}

}  // namespace

Error::Error(int code, std::string code_name, std::string message)
    : std::runtime_error(code_name + ": " + message),
      code_(code),
      code_name_(std::move(code_name)),
      message_(std::move(message)) {}

Intrinsics Intrinsics::FromFov(uint32_t width, uint32_t height, double fov_x_deg) {
  Intrinsics k;
  k.fx = k.fy = (width / 2.0) / std::tan(fov_x_deg * M_PI / 360.0);
  k.cx = (width - 1) / 2.0;
  k.cy = (height - 1) / 2.0;
  k.width = width;
  k.height = height;
  return k;
}

struct Client::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Mirage::Stub> stub;
  ClientOptions options;

  void Prepare(grpc::ClientContext* context, bool deadline = true) const {
    if (!options.token.empty()) context->AddMetadata("authorization", "Bearer " + options.token);
    if (deadline) {
      context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options.deadline_ms));
    }
  }
};

struct Stream::Impl {
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReaderWriter<pb::ClientMessage, pb::ServerMessage>> call;
  std::string session_id;
  uint64_t sequence = 0;
  bool closed = false;

  [[noreturn]] void Fail() {
    closed = true;
    call->WritesDone();
    Check(call->Finish());
    throw Error(grpc::FAILED_PRECONDITION, "FAILED_PRECONDITION", "the stream ended before a frame arrived");
  }
};

Client::Client(const std::string& target, const ClientOptions& options) : impl_(new Impl) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.root_certs_pem.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.root_certs_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  args.SetMaxSendMessageSize(16 * 1024 * 1024);
  impl_->channel = grpc::CreateCustomChannel(target, credentials, args);
  impl_->stub = pb::Mirage::NewStub(impl_->channel);
  impl_->options = options;
}

Client::~Client() = default;

SessionInfo Client::OpenSession(const Intrinsics& k, const SessionOptions& options) {
  pb::OpenSessionRequest request;
  request.mutable_protocol_version()->set_major(kProtocolMajor);
  request.add_capabilities("generate");
  request.set_convention(ConventionOf(options.convention));
  request.set_units_per_meter(options.units_per_meter);
  auto* intrinsics = request.mutable_intrinsics();
  intrinsics->set_fx(k.fx);
  intrinsics->set_fy(k.fy);
  intrinsics->set_cx(k.cx);
  intrinsics->set_cy(k.cy);
  intrinsics->set_width(k.width);
  intrinsics->set_height(k.height);
  request.set_frame_encoding(pb::FRAME_ENCODING_RAW_RGB8);
  request.set_depth_encoding(pb::DEPTH_ENCODING_NONE);
  request.set_generator(options.generator);
  request.mutable_memory()->set_budget_bytes(options.budget_bytes);
  request.set_seed(options.seed);
  pb::OpenSessionResponse response;
  grpc::ClientContext context;
  impl_->Prepare(&context);
  Check(impl_->stub->OpenSession(&context, request, &response));
  SessionInfo info;
  info.session_id = response.session_id();
  info.generator = response.generator().name();
  info.warnings.assign(response.warnings().begin(), response.warnings().end());
  info.server_protocol_major = response.server_version().major();
  return info;
}

std::unique_ptr<Stream> Client::OpenStream(const std::string& session_id) {
  auto impl = std::make_unique<Stream::Impl>();
  impl->context = std::make_unique<grpc::ClientContext>();
  impl_->Prepare(impl->context.get(), false);  // a stream lives as long as the session streams
  impl->call = impl_->stub->Stream(impl->context.get());
  impl->session_id = session_id;
  return std::unique_ptr<Stream>(new Stream(std::move(impl)));
}

MemoryStats Client::Stats(const std::string& session_id) {
  pb::SpatialMemoryQueryRequest request;
  request.set_session_id(session_id);
  request.mutable_stats();
  pb::SpatialMemoryQueryResponse response;
  grpc::ClientContext context;
  impl_->Prepare(&context);
  Check(impl_->stub->SpatialMemoryQuery(&context, request, &response));
  return FromProto(response.stats());
}

Frame Client::Render(const std::string& session_id, const Pose& pose) {
  pb::SpatialMemoryQueryRequest request;
  request.set_session_id(session_id);
  ToProto(pose, request.mutable_render()->mutable_pose());
  pb::SpatialMemoryQueryResponse response;
  grpc::ClientContext context;
  impl_->Prepare(&context);
  Check(impl_->stub->SpatialMemoryQuery(&context, request, &response));
  Frame out;
  RgbOf(response.render().rgb(), &out);
  out.coverage = response.render().coverage_fraction();
  return out;
}

uint64_t Client::CloseSession(const std::string& session_id) {
  pb::CloseSessionRequest request;
  request.set_session_id(session_id);
  pb::CloseSessionResponse response;
  grpc::ClientContext context;
  impl_->Prepare(&context);
  Check(impl_->stub->CloseSession(&context, request, &response));
  return response.frames();
}

Stream::Stream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Stream::~Stream() {
  if (impl_ && !impl_->closed) {
    impl_->context->TryCancel();
    impl_->call->Finish();
  }
}

Frame Stream::Step(const Pose& pose) {
  if (impl_->closed) {
    throw Error(grpc::FAILED_PRECONDITION, "FAILED_PRECONDITION", "the stream is closed: open another");
  }
  pb::ClientMessage message;
  message.set_session_id(impl_->session_id);
  auto* request = message.mutable_pose();
  request->set_sequence(++impl_->sequence);
  request->set_client_timestamp_us(std::chrono::duration_cast<std::chrono::microseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
  ToProto(pose, request->mutable_pose());
  if (!impl_->call->Write(message)) impl_->Fail();
  pb::ServerMessage reply;
  while (impl_->call->Read(&reply)) {
    if (reply.has_frame() && reply.frame().sequence() == impl_->sequence) return FromProto(reply.frame());
    if (reply.has_end()) break;
  }
  impl_->Fail();
}

uint64_t Stream::Close() {
  if (impl_->closed) return 0;
  pb::ClientMessage message;
  message.set_session_id(impl_->session_id);
  message.mutable_end();
  impl_->call->Write(message);
  impl_->call->WritesDone();
  uint64_t frames = 0;
  pb::ServerMessage reply;
  while (impl_->call->Read(&reply)) {
    if (reply.has_end()) frames = reply.end().frames_sent();
  }
  impl_->closed = true;
  Check(impl_->call->Finish());
  return frames;
}

}  // namespace mirage
