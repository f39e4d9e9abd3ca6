//! TEI's engine without a server: the model directory becomes TEI's backend and `Infer` queue
//! exactly as the router builds them (`text_embeddings_router::setup`, pytei patch 0008), and
//! callers submit requests to it directly.
//!
//! - One tokio runtime per loaded model, never one per call. TEI's batching and backend tasks
//!   hold the model for as long as their runtime runs, so dropping the engine shuts its runtime
//!   down, which is what frees the model (and GPU memory). A process forked after the engine
//!   started (Python's `multiprocessing` with `fork`) gets an error instead of a runtime whose
//!   threads did not survive the fork.
//! - Every input of a call is its own request, submitted together: TEI's queue batches them with
//!   those of concurrent calls from other threads, as it does for HTTP clients.
//! - A call with one input tokenizes it on the calling thread (pytei patch 0010, with
//!   `TEI_CALLER_TOKENIZERS` tokenizers set aside at start): `block_on` runs the request on that
//!   thread, so handing the text to a tokenization worker would only add two thread wake-ups to
//!   the call's latency. Calls with more inputs keep TEI's workers, which tokenize in parallel.
//! - Errors carry TEI's own error kind (the `error_type` of its HTTP answers), so callers map
//!   them as they map the router's.

use std::sync::OnceLock;
use std::time::Duration;

use futures::future::join_all;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use text_embeddings_backend::{DType, Pool};
use text_embeddings_core::infer::{Infer, InferMetadata};
use text_embeddings_core::tokenization::{into_tokens, EncodingInput, SimpleToken, TOKENIZE_ON_CALLER};
use text_embeddings_core::TextEmbeddingsError;
use text_embeddings_router::Info;
use tokio::sync::OwnedSemaphorePermit;

pub use tokenizers::TruncationDirection;

/// What went wrong, with TEI's error kind: "Validation", "Empty", "Tokenizer", "Backend",
/// "Overloaded", "Unhealthy" (as the router's `error_type`), or "Engine" for this crate's own.
#[derive(Debug, Clone)]
pub struct EngineError {
    pub kind: &'static str,
    pub message: String,
}

impl EngineError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for EngineError {}

impl From<TextEmbeddingsError> for EngineError {
    fn from(err: TextEmbeddingsError) -> Self {
        let kind = match err {
            TextEmbeddingsError::Tokenizer(_) => "Tokenizer",
            TextEmbeddingsError::Validation(_) => "Validation",
            TextEmbeddingsError::Empty(_) => "Empty",
            TextEmbeddingsError::Overloaded(_) => "Overloaded",
            TextEmbeddingsError::Backend(_) => "Backend",
        };
        Self::new(kind, err.to_string())
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// The router's start-up options that concern the engine (its defaults where `None`).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub model_dir: String,
    pub served_model_name: Option<String>,
    pub dtype: Option<String>,
    pub pooling: Option<String>,
    pub tokenization_workers: Option<usize>,
    pub max_concurrent_requests: usize,
    pub max_batch_tokens: usize,
    pub max_batch_requests: Option<usize>,
    pub max_client_batch_size: usize,
    pub auto_truncate: bool,
    pub default_prompt: Option<String>,
    pub default_prompt_name: Option<String>,
    pub dense_path: Option<String>,
}

impl EngineOptions {
    pub fn new(model_dir: impl Into<String>) -> Self {
        Self {
            model_dir: model_dir.into(),
            served_model_name: None,
            dtype: None,
            pooling: None,
            tokenization_workers: None,
            max_concurrent_requests: 512,
            max_batch_tokens: 16384,
            max_batch_requests: None,
            max_client_batch_size: 32,
            auto_truncate: true,
            default_prompt: None,
            default_prompt_name: None,
            dense_path: None,
        }
    }
}

/// One input of a call: a text, a pair (rerank, pair classification) or token ids.
#[derive(Debug, Clone)]
pub enum Input {
    Text(String),
    Pair(String, String),
    Ids(Vec<u32>),
}

impl From<Input> for EncodingInput {
    fn from(input: Input) -> Self {
        match input {
            Input::Text(text) => EncodingInput::Single(text),
            Input::Pair(a, b) => EncodingInput::Dual(a, b),
            Input::Ids(ids) => EncodingInput::Ids(ids),
        }
    }
}

/// A result with TEI's per-request accounting (the router's x-*-time headers).
#[derive(Debug, Clone)]
pub struct Timed<T> {
    pub value: T,
    pub prompt_tokens: usize,
    pub tokenization: Duration,
    pub queue: Duration,
    pub inference: Duration,
}

impl<T> Timed<T> {
    fn new(value: T, metadata: InferMetadata) -> Self {
        Self {
            value,
            prompt_tokens: metadata.prompt_tokens,
            tokenization: metadata.tokenization,
            queue: metadata.queue,
            inference: metadata.inference,
        }
    }
}

// TEI records its metrics through the `metrics` facade; in-process callers read them as the
// router's /metrics renders them. One recorder per process (the facade has one global).
static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

fn metrics_handle() -> Option<&'static PrometheusHandle> {
    METRICS.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).as_ref()
}

// The dtypes TEI's backend has for this build's features (text_embeddings_backend::DType).
fn parse_dtype(dtype: &str) -> Result<DType> {
    match dtype {
        #[cfg(all(feature = "candle", not(feature = "accelerate")))]
        "float16" => Ok(DType::Float16),
        #[cfg(any(feature = "candle", feature = "ort"))]
        "float32" => Ok(DType::Float32),
        other => Err(EngineError::new("Validation", format!("dtype {other:?} is not available in this build"))),
    }
}

fn parse_pooling(pooling: &str) -> Result<Pool> {
    match pooling {
        "cls" => Ok(Pool::Cls),
        "mean" => Ok(Pool::Mean),
        "splade" => Ok(Pool::Splade),
        "last-token" | "last_token" => Ok(Pool::LastToken),
        other => Err(EngineError::new(
            "Validation",
            format!("unknown pooling {other:?}: one of cls, mean, splade, last-token"),
        )),
    }
}

pub struct Engine {
    // Declared first, dropped first: the queue's and backend's senders go before the runtime
    // that runs their tasks is shut down.
    infer: Option<Infer>,
    info: Info,
    runtime: Option<tokio::runtime::Runtime>,
    pid: u32,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.infer.take();
        if let Some(runtime) = self.runtime.take() {
            // Cancels TEI's batching and backend tasks; their threads then see closed channels
            // and end, dropping the model.
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Engine {
    /// Load the model and warm the backend up, as the router does before it serves.
    pub fn load(options: EngineOptions) -> Result<Self> {
        metrics_handle();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("pytei-engine")
            .build()
            .map_err(|err| EngineError::new("Engine", format!("cannot start a tokio runtime: {err}")))?;
        let dtype = options.dtype.as_deref().map(parse_dtype).transpose()?;
        let pooling = options.pooling.as_deref().map(parse_pooling).transpose()?;
        let served = options.served_model_name.clone().unwrap_or_else(|| options.model_dir.clone());
        let (infer, info) = runtime
            .block_on(text_embeddings_router::setup(
                options.model_dir,
                None,
                options.tokenization_workers,
                dtype,
                served,
                pooling,
                options.max_concurrent_requests,
                options.max_batch_tokens,
                options.max_batch_requests,
                options.max_client_batch_size,
                options.auto_truncate,
                options.default_prompt,
                options.default_prompt_name,
                options.dense_path,
                None,
                None,
                None,
                None,
                "pytei-engine".to_string(),
            ))
            .map_err(|err| EngineError::new("Backend", format!("{err:#}")))?;
        Ok(Self { infer: Some(infer), info, runtime: Some(runtime), pid: std::process::id() })
    }

    fn infer(&self) -> Result<&Infer> {
        if self.pid != std::process::id() {
            return Err(EngineError::new(
                "Engine",
                "this process was forked after the engine started, and its runtime threads did not \
                 survive the fork: create the engine in the child process (multiprocessing's \
                 'spawn' start method), not before forking",
            ));
        }
        self.infer.as_ref().ok_or_else(|| EngineError::new("Engine", "the engine is closed"))
    }

    /// The router's /info, as JSON.
    pub fn info_json(&self) -> String {
        serde_json::to_string(&self.info).expect("Info serializes")
    }

    pub fn auto_truncate(&self) -> bool {
        self.info.auto_truncate
    }

    fn run<F: std::future::Future>(&self, future: F) -> Result<F::Output> {
        self.infer()?;
        let runtime = self.runtime.as_ref().ok_or_else(|| EngineError::new("Engine", "the engine is closed"))?;
        Ok(runtime.block_on(future))
    }

    fn check_batch(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(EngineError::new("Empty", "Input validation error: `inputs` cannot be empty"));
        }
        Ok(())
    }

    /// Each input as its own request to TEI's queue (so concurrent calls batch together), each
    /// with its permit, the results in input order.
    fn each<T, F, Fut>(&self, inputs: Vec<Input>, request: F) -> Result<Vec<Timed<T>>>
    where
        F: Fn(Infer, Input, OwnedSemaphorePermit) -> Fut,
        Fut: std::future::Future<Output = Result<Timed<T>>>,
    {
        let infer = self.infer()?;
        self.check_batch(inputs.len())?;
        let request = &request;
        let on_caller = inputs.len() == 1;
        let futures = inputs.into_iter().map(|input| {
            let infer = infer.clone();
            TOKENIZE_ON_CALLER.scope(on_caller, async move {
                let permit = infer.acquire_permit().await;
                request(infer, input, permit).await
            })
        });
        self.run(join_all(futures))?.into_iter().collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn embed(
        &self,
        inputs: Vec<Input>,
        truncate: Option<bool>,
        direction: TruncationDirection,
        prompt_name: Option<String>,
        normalize: bool,
        dimensions: Option<usize>,
    ) -> Result<Vec<Timed<Vec<f32>>>> {
        let truncate = truncate.unwrap_or(self.info.auto_truncate);
        self.each(inputs, |infer, input, permit| {
            let prompt_name = prompt_name.clone();
            async move {
                let response = infer
                    .embed_pooled(input, truncate, direction, prompt_name, normalize, dimensions, permit)
                    .await?;
                Ok(Timed::new(response.results, response.metadata))
            }
        })
    }

    /// Non-zero (index, value) pairs of each input's SPLADE vector, as the router sparsifies.
    pub fn embed_sparse(
        &self,
        inputs: Vec<Input>,
        truncate: Option<bool>,
        direction: TruncationDirection,
        prompt_name: Option<String>,
    ) -> Result<Vec<Timed<Vec<(u32, f32)>>>> {
        let truncate = truncate.unwrap_or(self.info.auto_truncate);
        self.each(inputs, |infer, input, permit| {
            let prompt_name = prompt_name.clone();
            async move {
                let response = infer.embed_sparse(input, truncate, direction, prompt_name, permit).await?;
                let sparse = response
                    .results
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(i, v)| (i as u32, *v))
                    .collect();
                Ok(Timed::new(sparse, response.metadata))
            }
        })
    }

    pub fn embed_all(
        &self,
        inputs: Vec<Input>,
        truncate: Option<bool>,
        direction: TruncationDirection,
        prompt_name: Option<String>,
    ) -> Result<Vec<Timed<Vec<Vec<f32>>>>> {
        let truncate = truncate.unwrap_or(self.info.auto_truncate);
        self.each(inputs, |infer, input, permit| {
            let prompt_name = prompt_name.clone();
            async move {
                let response = infer.embed_all(input, truncate, direction, prompt_name, permit).await?;
                Ok(Timed::new(response.results, response.metadata))
            }
        })
    }

    /// Scores of each input (a text or a pair): one per label, softmax/sigmoid unless raw.
    pub fn predict(
        &self,
        inputs: Vec<Input>,
        truncate: Option<bool>,
        direction: TruncationDirection,
        raw_scores: bool,
    ) -> Result<Vec<Timed<Vec<f32>>>> {
        let truncate = truncate.unwrap_or(self.info.auto_truncate);
        self.each(inputs, |infer, input, permit| async move {
            let response = infer.predict(input, truncate, direction, raw_scores, permit).await?;
            if response.results.iter().any(|s| s.is_nan()) {
                return Err(EngineError::new("Backend", "score is NaN"));
            }
            Ok(Timed::new(response.results, response.metadata))
        })
    }

    pub fn tokenize(
        &self,
        inputs: Vec<String>,
        add_special_tokens: bool,
        prompt_name: Option<String>,
    ) -> Result<Vec<Vec<SimpleToken>>> {
        let infer = self.infer()?;
        self.check_batch(inputs.len())?;
        let futures = inputs.into_iter().map(|input| {
            let infer = infer.clone();
            let prompt_name = prompt_name.clone();
            async move {
                let (encoded, encoding) = infer.tokenize(input.clone(), add_special_tokens, prompt_name).await?;
                let text = encoded.unwrap_or(input);
                Ok::<_, EngineError>(into_tokens(encoding, &text))
            }
        });
        self.run(join_all(futures))?.into_iter().collect()
    }

    pub fn decode(&self, ids: Vec<Vec<u32>>, skip_special_tokens: bool) -> Result<Vec<String>> {
        let infer = self.infer()?;
        self.check_batch(ids.len())?;
        let futures = ids.into_iter().map(|ids| {
            let infer = infer.clone();
            async move { Ok::<_, EngineError>(infer.decode(ids, skip_special_tokens).await?) }
        });
        self.run(join_all(futures))?.into_iter().collect()
    }

    pub fn health(&self) -> Result<bool> {
        let infer = self.infer()?.clone();
        self.run(async move { infer.health().await })
    }

    /// TEI's metrics in Prometheus' text format (empty if another recorder was installed first).
    pub fn metrics(&self) -> Result<String> {
        Ok(metrics_handle().map(|m| m.render()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_tei_kinds() {
        let err: EngineError = TextEmbeddingsError::Validation("too long".into()).into();
        assert_eq!(err.kind, "Validation");
        assert_eq!(err.message, "Input validation error: too long");
        let err: EngineError = TextEmbeddingsError::Empty("x".into()).into();
        assert_eq!(err.kind, "Empty");
    }

    #[test]
    fn options_parse_like_the_router() {
        assert!(matches!(parse_pooling("last-token"), Ok(Pool::LastToken)));
        assert_eq!(parse_pooling("max").unwrap_err().kind, "Validation");
        #[cfg(any(feature = "candle", feature = "ort"))]
        assert!(matches!(parse_dtype("float32"), Ok(DType::Float32)));
        assert_eq!(parse_dtype("int8").unwrap_err().kind, "Validation");
    }

    #[test]
    fn a_missing_model_is_an_error_not_a_panic() {
        let err = Engine::load(EngineOptions::new("/nonexistent/model")).err().expect("must fail");
        assert_eq!(err.kind, "Backend");
        assert!(err.message.contains("config.json") || err.message.contains("model"), "{err}");
    }
}
