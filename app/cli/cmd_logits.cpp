// cetus-cli logits: logits of every position as little-endian float32,
// row-major [tokens x vocab], so anyone can check us against their reference.
#include "cli_util.h"
#include "commands.h"

#include <bit>
#include <cstdio>
#include <fstream>

namespace cetus::cli {

void add_logits_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("logits", "Write the logits of every position as float32 [tokens x vocab]");
    struct Opts {
        LoadFlags load;
        std::string model, ids, out, device = "cpu";
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "Model folder or .gguf file")->required();
    cmd->add_option("--ids", o->ids, "Token ids, comma separated")->required();
    cmd->add_option("--out", o->out, "Output file")->required();
    cmd->add_option("--device", o->device, "auto, cpu or cuda");
    add_load_flags(cmd, o->load);
    cmd->callback([o] {
        static_assert(std::endian::native == std::endian::little, "logits are written little-endian");
        auto ids = parse_ids(o->ids);
        auto e = load_engine(o->model, o->device, 0, int64_t(ids.size()), o->load);
        std::vector<float> logits = e->logits(ids);
        std::ofstream out(o->out, std::ios::binary | std::ios::trunc);
        if (!out) throw Error(ErrorCode::Io, o->out + ": cannot open for writing");
        out.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
        if (!out) throw Error(ErrorCode::Io, o->out + ": write failed");
        std::fprintf(stderr, "wrote %zu x %lld float32 to %s\n", ids.size(), (long long)e->info().vocab_size,
                     o->out.c_str());
    });
}

}  // namespace cetus::cli
