// The Mirage C++ client: open a session, stream poses, receive frames, query memory, close.
//
// What an Unreal or Godot (GDExtension) plugin links. Plain structs in, plain structs out: the
// generated protobuf types stay inside client.cc. Every failed call throws mirage::Error carrying the
// server's gRPC status and its message (which says what to fix). Poses go out in the engine's own
// convention and units (SessionOptions::convention, e.g. "unreal" with centimetres); the runtime
// converts them at the edge. One Stream at a time per session; a Client is safe to share between
// threads, a Stream belongs to one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mirage {

class Error : public std::runtime_error {
 public:
  Error(int code, std::string code_name, std::string message);
  int code() const { return code_; }                          // grpc::StatusCode value
  const std::string& code_name() const { return code_name_; }  // e.g. "NOT_FOUND"
  const std::string& message() const { return message_; }      // the server's message

 private:
  int code_;
  std::string code_name_;
  std::string message_;
};

struct Intrinsics {
  double fx = 0, fy = 0, cx = 0, cy = 0;  // pixels; pixel centres at integer coordinates (OpenCV)
  uint32_t width = 0, height = 0;
  // square pixels, centred principal point, horizontal field of view in degrees
  static Intrinsics FromFov(uint32_t width, uint32_t height, double fov_x_deg);
};

struct Pose {
  double position[3] = {0, 0, 0};             // engine units (Unreal: centimetres)
  double rotation_wxyz[4] = {1, 0, 0, 0};     // the camera's rotation in the engine's own axes
};

struct SessionOptions {
  std::string convention = "opencv";  // opencv, opengl, unity, unreal, godot, arkit, arcore, panda3d
  double units_per_meter = 0;         // 0: the convention's default (100 for unreal)
  uint64_t seed = 0;
  std::string generator;              // empty: the server's default
  uint64_t budget_bytes = 0;          // 0: the server's default
};

struct ClientOptions {
  std::string root_certs_pem;  // empty: plaintext (loopback only), else TLS trusting these roots
  std::string token;           // bearer token of a server started with --token-file
  int deadline_ms = 30000;     // of each unary call
};

struct MemoryStats {
  uint64_t points = 0, bytes_used = 0, budget_bytes = 0, frames_ingested = 0, chunks = 0;
};

struct Frame {
  uint64_t sequence = 0;
  uint64_t frame_index = 0;
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, rows top to bottom
  float coverage = 0;        // fraction of pixels memory covered before generation
  int64_t server_received_us = 0, server_sent_us = 0;
  double server_total_ms = 0;
  MemoryStats memory;
};

struct SessionInfo {
  std::string session_id;
  std::string generator;
  std::vector<std::string> warnings;
  uint32_t server_protocol_major = 0;
};

class Client;

// Lock-step streaming: Step sends a pose and waits for its frame.
class Stream {
 public:
  ~Stream();
  Frame Step(const Pose& pose);
  // EndOfStream, then the server's StreamEnd: frames it sent.
  uint64_t Close();

 private:
  friend class Client;
  struct Impl;
  explicit Stream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Client {
 public:
  explicit Client(const std::string& target, const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  SessionInfo OpenSession(const Intrinsics& intrinsics, const SessionOptions& options = {});
  std::unique_ptr<Stream> OpenStream(const std::string& session_id);
  MemoryStats Stats(const std::string& session_id);
  // memory seen from pose, memory unchanged: rgb (height * width * 3) and the coverage fraction
  Frame Render(const std::string& session_id, const Pose& pose);
  // releases the session; returns the frames it made
  uint64_t CloseSession(const std::string& session_id);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mirage
