//! Endpoint classes: what kind of call `METHOD /path` is on the model server a route fronts.
//!
//! Policy grants classes, not paths: `inference` (generate, embed, score, tokenize),
//! `metadata` (read-only listing, health, info) and `management` (anything that changes the
//! server or exports what others sent it: adapters, caches, weights, repositories, files,
//! batches, slots, profilers). A call not in the table of its API is `unknown`, which the
//! policy stage denies, so a route the table forgot fails closed.
//!
//! The tables were taken from the servers' own routers (vLLM's FastAPI routers, TGI's
//! `router/src/server.rs`, llama.cpp's `tools/server/server.cpp`, KServe's REST server and
//! Triton's HTTP/gRPC protocol) and the OpenAI API reference. vLLM, TGI and llama.cpp also
//! serve the OpenAI routes, so their tables are searched first, then the OpenAI one.
//!
//! Paths are matched segment by segment after percent-decoding each segment, because the
//! Python servers route on the decoded path (`/v1/load%5Flora%5Fadapter` is
//! `/v1/load_lora_adapter` to uvicorn). A path with an empty segment (`//`), a `.` or `..`
//! segment, an encoded `/`, a bad escape or non-UTF-8 bytes matches nothing: servers disagree
//! on how to normalise those, so the gateway must not pick an answer for them. One trailing
//! `/` is ignored. Literal segments and methods are case-sensitive, as in the servers.
//!
//! Pattern segments: a literal; `*`, one segment (a model name, an id); `*suffix`, one
//! segment ending in `suffix` after at least one byte (KServe v1 `{model}:predict`); `**` as
//! the last segment, zero or more segments (ids with `/` in them, whole subtrees). The first
//! matching row wins, so specific rows come before the catch-alls below them. A `GET` row
//! also matches `HEAD`; a `*` method matches any method.

use std::borrow::Cow;

/// Which server API a route fronts; decides the built-in endpoint table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Vllm,
    Tgi,
    LlamaCpp,
    Kserve,
}

pub const INFERENCE: &str = "inference";
pub const METADATA: &str = "metadata";
pub const MANAGEMENT: &str = "management";
pub const UNKNOWN: &str = "unknown";

/// `(method or "*", pattern, class)`.
type Row = (&'static str, &'static str, &'static str);

const I: &str = INFERENCE;
const M: &str = METADATA;
const X: &str = MANAGEMENT;

// === impl Api ===

impl Api {
    /// The spellings [`Api::parse`] accepts, for config errors.
    pub const NAMES: &'static [&'static str] =
        &["openai", "vllm", "tgi", "llamacpp", "kserve", "triton"];

    /// The API named in config; `triton` is KServe v2 (Triton speaks that protocol).
    pub fn parse(s: &str) -> Option<Api> {
        match s {
            "openai" => Some(Api::OpenAi),
            "vllm" => Some(Api::Vllm),
            "tgi" => Some(Api::Tgi),
            "llamacpp" => Some(Api::LlamaCpp),
            "kserve" | "triton" => Some(Api::Kserve),
            _ => None,
        }
    }

    /// The tables searched for this API, in order.
    fn tables(self) -> &'static [&'static [Row]] {
        match self {
            Api::OpenAi => &[OPENAI],
            Api::Vllm => &[VLLM, OPENAI],
            Api::Tgi => &[TGI, OPENAI],
            Api::LlamaCpp => &[LLAMACPP, OPENAI],
            Api::Kserve => &[KSERVE],
        }
    }
}

/// The class of `method path` (path without query) on this API; `UNKNOWN` for anything not in
/// the table (deny by default downstream).
pub fn classify(api: Api, method: &str, path: &str) -> &'static str {
    let Some(segs) = segments(path) else {
        return UNKNOWN;
    };
    // Every framework here answers HEAD on a GET route.
    let method = if method == "HEAD" { "GET" } else { method };
    api.tables()
        .iter()
        .flat_map(|table| table.iter())
        .find(|(m, pattern, _)| (*m == "*" || *m == method) && matches(pattern, &segs))
        .map_or(UNKNOWN, |&(_, _, class)| class)
}

/// The percent-decoded segments of `path`, or `None` for a path that is not plainly one
/// sequence of segments (see the module docs). A query, if one was left on, is dropped.
/// `/` is no segments.
pub(crate) fn segments(path: &str) -> Option<Vec<Cow<'_, str>>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').map(decode_segment).collect()
}

fn decode_segment(raw: &str) -> Option<Cow<'_, str>> {
    let seg = if raw.contains('%') {
        Cow::Owned(percent_decode(raw)?)
    } else {
        Cow::Borrowed(raw)
    };
    let plain = !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('/');
    plain.then_some(seg)
}

/// `%XX` escapes decoded; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = char::from(hex[0]).to_digit(16)?;
            let lo = char::from(hex[1]).to_digit(16)?;
            // Two hex digits are at most 0xFF.
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn matches(pattern: &str, segs: &[Cow<'_, str>]) -> bool {
    if pattern == "/" {
        return segs.is_empty();
    }
    let mut i = 0;
    for p in pattern.split('/').skip(1) {
        if p == "**" {
            return true;
        }
        let Some(seg) = segs.get(i) else {
            return false;
        };
        let ok = match p.strip_prefix('*') {
            Some("") => true,
            Some(suffix) => seg.len() > suffix.len() && seg.ends_with(suffix),
            None => p == seg,
        };
        if !ok {
            return false;
        }
        i += 1;
    }
    i == segs.len()
}

// === tables ===

/// The OpenAI API, and the base of the OpenAI-compatible servers.
const OPENAI: &[Row] = &[
    ("POST", "/v1/chat/completions", I),
    ("POST", "/v1/completions", I),
    ("POST", "/v1/embeddings", I),
    ("POST", "/v1/moderations", I),
    ("POST", "/v1/audio/speech", I),
    ("POST", "/v1/audio/transcriptions", I),
    ("POST", "/v1/audio/translations", I),
    ("POST", "/v1/images/generations", I),
    ("POST", "/v1/images/edits", I),
    ("POST", "/v1/images/variations", I),
    ("POST", "/v1/responses", I),
    ("POST", "/v1/responses/input_tokens", I),
    // A stored response is reached by its unguessable id, which only its creator holds, and
    // background responses must be polled: part of generating, not an export.
    ("GET", "/v1/responses/*", I),
    ("DELETE", "/v1/responses/*", I),
    ("POST", "/v1/responses/*/cancel", I),
    ("GET", "/v1/responses/*/input_items", I),
    // Conversation state for the Responses API, by id, on the same reasoning.
    ("*", "/v1/conversations/**", I),
    // Realtime: a WebSocket (GET + Upgrade) and its session tokens.
    ("GET", "/v1/realtime", I),
    ("POST", "/v1/realtime/sessions", I),
    ("POST", "/v1/realtime/transcription_sessions", I),
    ("POST", "/v1/realtime/client_secrets", I),
    // Model ids may contain `/` (`org/name`), hence `**`.
    ("GET", "/v1/models/**", M),
    ("DELETE", "/v1/models/**", X),
    ("GET", "/health", M),
    ("GET", "/metrics", M),
    // Stored chat completions (list, read, update, delete) are everyone's prompts.
    ("*", "/v1/chat/completions/**", X),
    // Files are other callers' data; uploads feed batches and fine-tunes.
    ("*", "/v1/files/**", X),
    ("*", "/v1/uploads/**", X),
    // Batches run inference from an uploaded file: the model and prompts are never in a
    // request body the gateway sees, so per-request model policy and masking cannot apply.
    ("*", "/v1/batches/**", X),
    ("*", "/v1/fine_tuning/**", X),
    ("*", "/v1/vector_stores/**", X),
    ("*", "/v1/assistants/**", X),
    ("*", "/v1/threads/**", X),
    ("*", "/v1/evals/**", X),
    ("*", "/v1/organization/**", X),
];

/// vLLM's own routes (`vllm serve`), searched before [`OPENAI`].
const VLLM: &[Row] = &[
    ("POST", "/v1/chat/completions/render", I),
    ("POST", "/v1/completions/render", I),
    ("POST", "/v1/messages", I),
    ("POST", "/v1/messages/count_tokens", I),
    ("POST", "/tokenize", I),
    ("POST", "/detokenize", I),
    ("POST", "/pooling", I),
    ("POST", "/classify", I),
    ("POST", "/score", I),
    ("POST", "/v1/score", I),
    ("POST", "/rerank", I),
    ("POST", "/v1/rerank", I),
    ("POST", "/v2/rerank", I),
    // SageMaker: dispatches on the body to one of the inference routes above.
    ("POST", "/invocations", I),
    // Tokens in, tokens out (disaggregated serving).
    ("POST", "/inference/v1/generate", I),
    ("GET", "/ping", M),
    ("POST", "/ping", M),
    ("GET", "/version", M),
    ("GET", "/load", M),
    ("GET", "/get_tokenizer_info", M),
    ("GET", "/is_sleeping", M),
    ("GET", "/is_paused", M),
    ("POST", "/is_scaling_elastic_ep", M),
    ("*", "/v1/load_lora_adapter", X),
    ("*", "/v1/unload_lora_adapter", X),
    ("*", "/sleep", X),
    ("*", "/wake_up", X),
    ("*", "/reset_prefix_cache", X),
    ("*", "/reset_mm_cache", X),
    ("*", "/reset_encoder_cache", X),
    ("*", "/collective_rpc", X),
    ("*", "/start_profile", X),
    ("*", "/stop_profile", X),
    ("*", "/scale_elastic_ep", X),
    // Pausing and aborting act on every caller's requests.
    ("*", "/pause", X),
    ("*", "/pause/step", X),
    ("*", "/resume", X),
    ("*", "/abort_requests", X),
    // RL weight sync (dev mode).
    ("*", "/init_weight_transfer_engine", X),
    ("*", "/start_weight_update", X),
    ("*", "/start_draft_weight_update", X),
    ("*", "/update_weights", X),
    ("*", "/finish_weight_update", X),
    ("*", "/update_weight_version", X),
    ("*", "/weight_checker", X),
    ("*", "/weight_info", X),
    ("*", "/get_world_size", X),
    // The whole engine config, with hosts and ports of the deployment.
    ("*", "/server_info", X),
    ("*", "/inference/v1/config", X),
];

/// Text Generation Inference's own routes, searched before [`OPENAI`].
const TGI: &[Row] = &[
    ("POST", "/", I),
    ("POST", "/generate", I),
    ("POST", "/generate_stream", I),
    ("POST", "/tokenize", I),
    ("POST", "/chat_tokenize", I),
    ("POST", "/invocations", I),
    ("POST", "/vertex", I),
    ("GET", "/", M),
    ("GET", "/info", M),
    ("GET", "/ping", M),
    // Built with the `kserve` feature.
    ("POST", "/v2/models/*/versions/*/infer", I),
    ("GET", "/v2", M),
    ("GET", "/v2/health/live", M),
    ("GET", "/v2/health/ready", M),
    ("GET", "/v2/models/*/versions/*", M),
    ("GET", "/v2/models/*/versions/*/ready", M),
];

/// llama.cpp's `llama-server` own routes, searched before [`OPENAI`].
const LLAMACPP: &[Row] = &[
    ("POST", "/completion", I),
    ("POST", "/completions", I),
    ("POST", "/chat/completions", I),
    ("POST", "/chat/completions/input_tokens", I),
    ("POST", "/v1/chat/completions/input_tokens", I),
    ("POST", "/responses", I),
    ("POST", "/responses/input_tokens", I),
    ("POST", "/audio/transcriptions", I),
    ("POST", "/v1/messages", I),
    ("POST", "/v1/messages/count_tokens", I),
    ("POST", "/api/chat", I),
    ("POST", "/infill", I),
    ("POST", "/embedding", I),
    ("POST", "/embeddings", I),
    ("POST", "/rerank", I),
    ("POST", "/reranking", I),
    ("POST", "/v1/rerank", I),
    ("POST", "/v1/reranking", I),
    ("POST", "/tokenize", I),
    ("POST", "/detokenize", I),
    ("POST", "/apply-template", I),
    ("GET", "/v1/health", M),
    ("GET", "/props", M),
    ("GET", "/models", M),
    ("GET", "/models/sse", M),
    ("GET", "/api/tags", M),
    ("POST", "/api/show", M),
    ("GET", "/lora-adapters", M),
    ("*", "/props", X),
    ("*", "/lora-adapters", X),
    // GET lists every slot's prompt and output; POST saves, restores or erases a slot.
    ("*", "/slots/**", X),
    // Router mode: load, unload, add and remove models.
    ("*", "/models", X),
    ("*", "/models/load", X),
    ("*", "/models/unload", X),
    // Server-side tool execution and the web UI's fetch-anything proxy.
    ("*", "/tools", X),
    ("*", "/cors-proxy", X),
];

const GRPC_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// KServe's open inference protocol (v2, HTTP and gRPC, also Triton's), KServe's v1 protocol
/// and the OpenAI routes KServe's Hugging Face runtime serves under `/openai`.
/// gRPC is matched for any method: a gRPC server answers only POST, and a path naming a
/// management RPC stays management whatever method it comes with.
const KSERVE: &[Row] = &[
    ("POST", "/v2/models/*/infer", I),
    ("POST", "/v2/models/*/versions/*/infer", I),
    ("POST", "/v2/models/*/generate", I),
    ("POST", "/v2/models/*/versions/*/generate", I),
    ("POST", "/v2/models/*/generate_stream", I),
    ("POST", "/v2/models/*/versions/*/generate_stream", I),
    ("POST", "/v1/models/*:predict", I),
    ("POST", "/v1/models/*:explain", I),
    ("POST", "/openai/v1/completions", I),
    ("POST", "/openai/v1/chat/completions", I),
    ("POST", "/openai/v1/embeddings", I),
    ("*", GRPC_INFER, I),
    ("*", "/inference.GRPCInferenceService/ModelStreamInfer", I),
    ("GET", "/", M),
    ("GET", "/metrics", M),
    ("GET", "/v2", M),
    ("GET", "/v2/health/live", M),
    ("GET", "/v2/health/ready", M),
    ("GET", "/v2/models", M),
    ("GET", "/v2/models/stats", M),
    ("GET", "/v2/models/*", M),
    ("GET", "/v2/models/*/versions/*", M),
    ("GET", "/v2/models/*/ready", M),
    ("GET", "/v2/models/*/versions/*/ready", M),
    ("GET", "/v2/models/*/config", M),
    ("GET", "/v2/models/*/versions/*/config", M),
    ("GET", "/v2/models/*/stats", M),
    ("GET", "/v2/models/*/versions/*/stats", M),
    ("GET", "/v1/models", M),
    ("GET", "/v1/models/*", M),
    ("GET", "/openai/v1/models", M),
    ("*", "/inference.GRPCInferenceService/ServerLive", M),
    ("*", "/inference.GRPCInferenceService/ServerReady", M),
    ("*", "/inference.GRPCInferenceService/ModelReady", M),
    ("*", "/inference.GRPCInferenceService/ServerMetadata", M),
    ("*", "/inference.GRPCInferenceService/ModelMetadata", M),
    ("*", "/inference.GRPCInferenceService/ModelConfig", M),
    ("*", "/inference.GRPCInferenceService/ModelStatistics", M),
    ("*", "/grpc.health.v1.Health/Check", M),
    // Index, load and unload (Triton also takes `/v2/repository/{repo}/...`).
    ("*", "/v2/repository/**", X),
    ("*", "/v2/models/*/trace/setting", X),
    ("*", "/v2/trace/setting", X),
    ("*", "/v2/logging", X),
    // Shared memory regions let a caller point the server at memory it then reads or writes.
    ("*", "/v2/systemsharedmemory/**", X),
    ("*", "/v2/cudasharedmemory/**", X),
    ("*", "/inference.GRPCInferenceService/RepositoryIndex", X),
    (
        "*",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        X,
    ),
    (
        "*",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        X,
    ),
    (
        "*",
        "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
        X,
    ),
    (
        "*",
        "/inference.GRPCInferenceService/SystemSharedMemoryRegister",
        X,
    ),
    (
        "*",
        "/inference.GRPCInferenceService/SystemSharedMemoryUnregister",
        X,
    ),
    (
        "*",
        "/inference.GRPCInferenceService/CudaSharedMemoryStatus",
        X,
    ),
    (
        "*",
        "/inference.GRPCInferenceService/CudaSharedMemoryRegister",
        X,
    ),
    (
        "*",
        "/inference.GRPCInferenceService/CudaSharedMemoryUnregister",
        X,
    ),
    ("*", "/inference.GRPCInferenceService/TraceSetting", X),
    ("*", "/inference.GRPCInferenceService/LogSettings", X),
];

#[cfg(test)]
mod tests {
    use super::*;
    use Api::*;

    #[test]
    fn each_api_classifies_its_endpoints() {
        let cases: &[(Api, &str, &str, &str)] = &[
            // OpenAI
            (OpenAi, "POST", "/v1/chat/completions", I),
            (OpenAi, "POST", "/v1/embeddings", I),
            (OpenAi, "POST", "/v1/responses", I),
            (OpenAi, "GET", "/v1/responses/resp_123", I),
            (OpenAi, "POST", "/v1/audio/transcriptions", I),
            (OpenAi, "GET", "/v1/models", M),
            (OpenAi, "HEAD", "/v1/models", M),
            (OpenAi, "GET", "/v1/models/gpt-4o", M),
            (OpenAi, "GET", "/v1/models/meta-llama/Llama-3-8B", M),
            (OpenAi, "DELETE", "/v1/models/ft:gpt-4o:acme:x", X),
            (OpenAi, "GET", "/v1/chat/completions", X),
            (OpenAi, "GET", "/v1/chat/completions/chatcmpl-1/messages", X),
            (OpenAi, "POST", "/v1/files", X),
            (OpenAi, "GET", "/v1/files/file-1/content", X),
            (OpenAi, "POST", "/v1/batches", X),
            (OpenAi, "POST", "/v1/fine_tuning/jobs/ftjob-1/cancel", X),
            (OpenAi, "POST", "/v1/load_lora_adapter", UNKNOWN),
            (OpenAi, "POST", "/generate", UNKNOWN),
            (OpenAi, "PUT", "/v1/embeddings", UNKNOWN),
            // Caught by the stored-completions subtree: stricter than unknown is fine.
            (OpenAi, "PUT", "/v1/chat/completions", X),
            (OpenAi, "post", "/v1/embeddings", UNKNOWN),
            // vLLM
            (Vllm, "POST", "/v1/chat/completions", I),
            (Vllm, "POST", "/v1/chat/completions/render", I),
            (Vllm, "POST", "/tokenize", I),
            (Vllm, "POST", "/pooling", I),
            (Vllm, "POST", "/v2/rerank", I),
            (Vllm, "POST", "/invocations", I),
            (Vllm, "GET", "/health", M),
            (Vllm, "GET", "/ping", M),
            (Vllm, "GET", "/version", M),
            (Vllm, "GET", "/metrics", M),
            (Vllm, "GET", "/v1/models", M),
            (Vllm, "POST", "/v1/load_lora_adapter", X),
            (Vllm, "POST", "/v1/unload_lora_adapter", X),
            (Vllm, "POST", "/sleep", X),
            (Vllm, "GET", "/sleep", X),
            (Vllm, "POST", "/wake_up", X),
            (Vllm, "POST", "/reset_prefix_cache", X),
            (Vllm, "POST", "/collective_rpc", X),
            (Vllm, "POST", "/start_profile", X),
            (Vllm, "POST", "/scale_elastic_ep", X),
            (Vllm, "GET", "/server_info", X),
            (Vllm, "POST", "/generate", UNKNOWN),
            // TGI
            (Tgi, "POST", "/", I),
            (Tgi, "POST", "/generate", I),
            (Tgi, "POST", "/generate_stream", I),
            (Tgi, "POST", "/chat_tokenize", I),
            (Tgi, "POST", "/v1/chat/completions", I),
            (Tgi, "GET", "/", M),
            (Tgi, "GET", "/info", M),
            (Tgi, "GET", "/health", M),
            (Tgi, "GET", "/v1/models", M),
            (Tgi, "POST", "/v2/models/m/versions/1/infer", I),
            (Tgi, "POST", "/v1/files", X),
            (Tgi, "POST", "/sleep", UNKNOWN),
            // llama.cpp
            (LlamaCpp, "POST", "/completion", I),
            (LlamaCpp, "POST", "/v1/chat/completions", I),
            (LlamaCpp, "POST", "/v1/chat/completions/input_tokens", I),
            (LlamaCpp, "POST", "/embeddings", I),
            (LlamaCpp, "POST", "/infill", I),
            (LlamaCpp, "POST", "/apply-template", I),
            (LlamaCpp, "POST", "/reranking", I),
            (LlamaCpp, "GET", "/props", M),
            (LlamaCpp, "GET", "/models", M),
            (LlamaCpp, "GET", "/health", M),
            (LlamaCpp, "GET", "/lora-adapters", M),
            (LlamaCpp, "POST", "/props", X),
            (LlamaCpp, "POST", "/lora-adapters", X),
            (LlamaCpp, "GET", "/slots", X),
            (LlamaCpp, "POST", "/slots/0", X),
            (LlamaCpp, "POST", "/models/load", X),
            (LlamaCpp, "DELETE", "/models", X),
            // KServe / Triton
            (Kserve, "POST", "/v2/models/resnet/infer", I),
            (Kserve, "POST", "/v2/models/resnet/versions/3/infer", I),
            (Kserve, "POST", "/v2/models/llm/generate_stream", I),
            (Kserve, "POST", "/v1/models/sklearn:predict", I),
            (Kserve, "POST", GRPC_INFER, I),
            (
                Kserve,
                "POST",
                "/inference.GRPCInferenceService/ModelStreamInfer",
                I,
            ),
            (Kserve, "GET", "/v2", M),
            (Kserve, "GET", "/v2/health/ready", M),
            (Kserve, "GET", "/v2/models/resnet", M),
            (Kserve, "GET", "/v2/models/resnet/versions/3/ready", M),
            (Kserve, "GET", "/v2/models/resnet/config", M),
            (Kserve, "GET", "/v2/models/stats", M),
            (
                Kserve,
                "POST",
                "/inference.GRPCInferenceService/ServerLive",
                M,
            ),
            (
                Kserve,
                "POST",
                "/inference.GRPCInferenceService/ModelStatistics",
                M,
            ),
            (Kserve, "POST", "/v2/repository/index", X),
            (Kserve, "POST", "/v2/repository/models/resnet/load", X),
            (Kserve, "POST", "/v2/repository/models/resnet/unload", X),
            (Kserve, "GET", "/v2/models/resnet/trace/setting", X),
            (Kserve, "POST", "/v2/trace/setting", X),
            (Kserve, "GET", "/v2/logging", X),
            (
                Kserve,
                "POST",
                "/v2/systemsharedmemory/region/r/register",
                X,
            ),
            (Kserve, "GET", "/v2/cudasharedmemory/status", X),
            (
                Kserve,
                "POST",
                "/inference.GRPCInferenceService/RepositoryModelLoad",
                X,
            ),
            (
                Kserve,
                "GET",
                "/inference.GRPCInferenceService/RepositoryModelLoad",
                X,
            ),
            (
                Kserve,
                "POST",
                "/inference.GRPCInferenceService/CudaSharedMemoryRegister",
                X,
            ),
            (Kserve, "POST", "/v1/chat/completions", UNKNOWN),
            (Kserve, "GET", "/v2/models/resnet/infer", UNKNOWN),
            (
                Kserve,
                "POST",
                "/inference.GRPCInferenceService/Nope",
                UNKNOWN,
            ),
        ];
        for &(api, method, path, want) in cases {
            assert_eq!(classify(api, method, path), want, "{api:?} {method} {path}");
        }
    }

    #[test]
    fn tricky_paths_match_exactly_or_not_at_all() {
        let cases: &[(Api, &str, &str, &str)] = &[
            (OpenAi, "POST", "/v1/chat/completions/", I),
            (OpenAi, "POST", "/v1/chat/completions//", UNKNOWN),
            (OpenAi, "POST", "/v1//chat/completions", UNKNOWN),
            (OpenAi, "POST", "//v1/chat/completions", UNKNOWN),
            (OpenAi, "POST", "v1/chat/completions", UNKNOWN),
            (OpenAi, "POST", "", UNKNOWN),
            (OpenAi, "POST", "/v1/./chat/completions", UNKNOWN),
            (OpenAi, "POST", "/v1/chat/../chat/completions", UNKNOWN),
            (OpenAi, "POST", "/V1/chat/completions", UNKNOWN),
            (OpenAi, "POST", "/v1/chat/completions?stream=true", I),
            (Kserve, "POST", "/v2/models/a/../repository/index", UNKNOWN),
            (Kserve, "POST", "/v2/models/%2E%2E/infer", UNKNOWN),
            (Kserve, "POST", "/v2/models/a%2Fb/infer", UNKNOWN),
            (Kserve, "POST", "/v2/models/a%2fb/infer", UNKNOWN),
            (Kserve, "POST", "/v2/models//infer", UNKNOWN),
            (Kserve, "POST", "/v2/models/a%zz/infer", UNKNOWN),
            (Kserve, "POST", "/v2/models/%ff/infer", UNKNOWN),
            (Kserve, "POST", "/v2/models/my%20model/infer", I),
            (Kserve, "POST", "/v1/models/:predict", UNKNOWN),
            // Decoded as the Python servers decode it before routing.
            (Vllm, "POST", "/v1/load%5Flora%5Fadapter", X),
            (Vllm, "POST", "/%73leep", X),
            (Tgi, "GET", "/", M),
            (Tgi, "GET", "//", UNKNOWN),
        ];
        for &(api, method, path, want) in cases {
            assert_eq!(classify(api, method, path), want, "{api:?} {method} {path}");
        }
    }

    #[test]
    fn api_names_parse_and_every_name_is_listed() {
        assert_eq!(Api::parse("triton"), Some(Kserve));
        assert_eq!(Api::parse("llamacpp"), Some(LlamaCpp));
        assert_eq!(Api::parse("OpenAI"), None);
        assert_eq!(Api::parse(""), None);
        for name in Api::NAMES {
            assert!(Api::parse(name).is_some(), "{name}");
        }
    }

    #[test]
    fn every_table_row_is_well_formed() {
        for table in [OPENAI, VLLM, TGI, LLAMACPP, KSERVE] {
            for &(method, pattern, class) in table {
                assert!(
                    ["*", "GET", "POST", "DELETE"].contains(&method),
                    "{pattern}"
                );
                assert!(pattern.starts_with('/'), "{pattern}");
                assert!([I, M, X].contains(&class), "{pattern}");
                let doubles = pattern.match_indices("**").count();
                assert!(
                    doubles == 0 || (doubles == 1 && pattern.ends_with("/**")),
                    "{pattern}"
                );
            }
        }
    }
}
