// echo_client.cpp: trio.hpp in one page. An echo server and three clients
// run concurrently in one nursery; the clients have a 2 s deadline; once
// they are done the server is cancelled. Exits 0 if every echo came back.
//
// Build (from the repository, after `cargo build -p trio-ffi`):
//   g++ -std=c++17 -Wall -Wextra -Werror -Iinclude -Ibindings/cpp
//       examples/cpp/echo_client.cpp -x none $CARGO_TARGET_DIR/debug/libtrio.a
//       -lgcc_s -lutil -lrt -lpthread -lm -ldl -o echo_client
// or, installed: g++ -std=c++17 echo_client.cpp $(pkg-config --cflags --libs trio)
#include <trio.hpp>

#include <cstdio>
#include <string>

// Echoes one connection until the client sends EOF.
static void echo(trio::stream s) {
    for (;;) {
        std::string data = s.receive_some();
        if (data.empty()) return; // EOF: the stream closes when `s` goes
        s.send_all(data);
    }
}

// Sends a line, sends EOF, reads everything back.
static std::string client(std::uint16_t port, const std::string &line) {
    trio::stream c = trio::stream::connect_tcp("127.0.0.1", port);
    c.send_all(line);
    c.send_eof();
    std::string back;
    for (std::string part; !(part = c.receive_some()).empty();) back += part;
    return back;
}

int main() {
    int ok = 0;
    try {
        trio::run([&] {
            trio::listener l = trio::listener::tcp("127.0.0.1", 0);
            std::uint16_t port = l.port();
            std::printf("echo server on 127.0.0.1:%u\n", static_cast<unsigned>(port));
            trio::open_nursery([&](trio::nursery &server) {
                // The server: accepts forever, one child task per connection.
                server.spawn([&] {
                    for (;;) {
                        // Move the stream into the child: it owns it.
                        server.spawn([s = l.accept()]() mutable { echo(std::move(s)); });
                    }
                });
                bool late = trio::move_on_after(2.0, [&] {
                    trio::open_nursery([&](trio::nursery &clients) {
                        for (int i = 1; i <= 3; i++) {
                            clients.spawn([&, i] {
                                std::string line = "hello from client " + std::to_string(i);
                                std::string back = client(port, line);
                                std::printf("client %d: sent \"%s\", got \"%s\"\n", i, line.c_str(), back.c_str());
                                if (back == line) ok++;
                            });
                        }
                    });
                });
                std::printf(late ? "the deadline expired\n" : "the clients finished before the deadline\n");
                server.cancel(); // stop accepting; open_nursery returns normally
            });
        });
    } catch (const std::exception &e) {
        std::fprintf(stderr, "echo_client: %s\n", e.what());
        return 1;
    }
    std::printf("%d of 3 echoes came back\n", ok);
    return ok == 3 ? 0 : 1;
}
