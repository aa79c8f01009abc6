// Stream poses to a Mirage runtime the way an Unreal plugin would (Unreal's convention: centimetres,
// left-handed, Z up) and print what came back as one JSON object.
//
//   mirage_stream HOST:PORT [FRAMES=100] [SIZE=64]
//
// Prints the session id, frames, the client's round trip per frame (p50 / p99, ms), the memory's
// points, an FNV-1a checksum of the last frame's RGB, the coverage of a memory render, and what the
// server said to a call on a session that does not exist (its status and message).
#include <mirage/client.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

uint64_t Fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 1099511628211ULL;
  }
  return h;
}

// A yaw of `angle` radians about Unreal's Z (up) axis, at (x, y, 170) cm.
mirage::Pose UnrealPose(double x_cm, double y_cm, double angle) {
  mirage::Pose pose;
  pose.position[0] = x_cm;
  pose.position[1] = y_cm;
  pose.position[2] = 170.0;
  pose.rotation_wxyz[0] = std::cos(angle / 2);
  pose.rotation_wxyz[3] = std::sin(angle / 2);
  return pose;
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::min<double>(v.size() - 1, std::floor(q * (v.size() - 1) + 0.5)));
  return v[i];
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s HOST:PORT [FRAMES=100] [SIZE=64]\n", argv[0]);
    return 2;
  }
  const int frames = argc > 2 ? std::atoi(argv[2]) : 100;
  const uint32_t size = argc > 3 ? static_cast<uint32_t>(std::atoi(argv[3])) : 64;
  try {
    mirage::Client client(argv[1]);
    mirage::SessionOptions options;
    options.convention = "unreal";
    options.seed = 7;
    const auto info = client.OpenSession(mirage::Intrinsics::FromFov(size, size, 60.0), options);
    auto stream = client.OpenStream(info.session_id);
    std::vector<double> trips;
    mirage::Frame last;
    for (int i = 0; i < frames; ++i) {
      const auto start = std::chrono::steady_clock::now();
      last = stream->Step(UnrealPose(10.0 * std::sin(0.05 * i), 0.0, 0.02 * i));
      trips.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    const uint64_t sent = stream->Close();
    const auto view = client.Render(info.session_id, UnrealPose(0.0, 0.0, 0.0));
    std::string error_code, error_message;
    try {
      client.Stats("00000000000000000000000000000000");
    } catch (const mirage::Error& e) {
      error_code = e.code_name();
      error_message = e.message();
    }
    const auto stats = client.Stats(info.session_id);
    const uint64_t made = client.CloseSession(info.session_id);
    std::printf(
        "{\"session_id\":\"%s\",\"generator\":\"%s\",\"frames\":%d,\"frames_sent\":%llu,\"frames_made\":%llu,"
        "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"points\":%llu,\"last_sequence\":%llu,\"last_rgb_fnv1a\":\"%016llx\","
        "\"width\":%u,\"height\":%u,\"render_coverage\":%.4f,\"error_code\":\"%s\",\"error_message\":\"%s\"}\n",
        info.session_id.c_str(), info.generator.c_str(), frames, static_cast<unsigned long long>(sent),
        static_cast<unsigned long long>(made), Percentile(trips, 0.5), Percentile(trips, 0.99),
        static_cast<unsigned long long>(stats.points), static_cast<unsigned long long>(last.sequence),
        static_cast<unsigned long long>(Fnv1a(last.rgb)), last.width, last.height, view.coverage,
        error_code.c_str(), Escape(error_message).c_str());
  } catch (const mirage::Error& e) {
    std::fprintf(stderr, "mirage: %s\n", e.what());
    return 1;
  }
  return 0;
}
