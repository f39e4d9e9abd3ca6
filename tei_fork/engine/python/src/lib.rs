//! `pytei_native`: the thin PyO3 layer over `pytei-engine`. Python's `pytei.LocalEngine` is the
//! interface (result types, error classes, model resolution); this module moves data across:
//! inputs in, little-endian float32/uint32 buffers out (numpy reads them without a copy of
//! each element), the GIL released for every call into the engine.

use std::sync::{Arc, RwLock};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pytei_engine::{Engine, EngineError, EngineOptions, Input, Timed, TruncationDirection};

create_exception!(pytei_native, NativeError, PyException, "An error of TEI's engine: args are (kind, message).");

fn to_py(err: EngineError) -> PyErr {
    NativeError::new_err((err.kind, err.message))
}

fn direction(value: Option<&str>) -> PyResult<TruncationDirection> {
    match value.unwrap_or("right") {
        "right" => Ok(TruncationDirection::Right),
        "left" => Ok(TruncationDirection::Left),
        other => Err(NativeError::new_err(("Validation", format!("truncation_direction {other:?}: left or right")))),
    }
}

fn inputs(items: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Input>> {
    items
        .into_iter()
        .map(|item| {
            if let Ok(text) = item.extract::<String>() {
                Ok(Input::Text(text))
            } else if let Ok((a, b)) = item.extract::<(String, String)>() {
                Ok(Input::Pair(a, b))
            } else if let Ok(ids) = item.extract::<Vec<u32>>() {
                Ok(Input::Ids(ids))
            } else {
                Err(NativeError::new_err(("Validation", "an input is a str, a (str, str) pair or a list of token ids")))
            }
        })
        .collect()
}

type Timing = (usize, u64, u64, u64);

fn timings<T>(results: &[Timed<T>]) -> Vec<Timing> {
    results
        .iter()
        .map(|r| (r.prompt_tokens, r.tokenization.as_nanos() as u64, r.queue.as_nanos() as u64, r.inference.as_nanos() as u64))
        .collect()
}

fn f32_bytes<'py, 'a>(py: Python<'py>, rows: impl Iterator<Item = &'a [f32]>) -> Bound<'py, PyBytes> {
    let mut buffer = Vec::new();
    for row in rows {
        for value in row {
            buffer.extend_from_slice(&value.to_le_bytes());
        }
    }
    PyBytes::new(py, &buffer)
}

fn flat_f32(rows: &[Timed<Vec<f32>>]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(rows.iter().map(|r| r.value.len() * 4).sum());
    for row in rows {
        for value in &row.value {
            buffer.extend_from_slice(&value.to_le_bytes());
        }
    }
    buffer
}

#[pyclass(module = "pytei_native", frozen)]
struct NativeEngine {
    // None once closed. Calls hold their own Arc, so closing during a call frees the model
    // when that call returns.
    engine: RwLock<Option<Arc<Engine>>>,
}

impl NativeEngine {
    fn engine(&self) -> PyResult<Arc<Engine>> {
        self.engine
            .read()
            .expect("engine lock")
            .clone()
            .ok_or_else(|| NativeError::new_err(("Engine", "the engine is closed")))
    }
}

#[pymethods]
impl NativeEngine {
    #[new]
    #[pyo3(signature = (model_dir, *, served_model_name=None, dtype=None, pooling=None, tokenization_workers=None,
        max_concurrent_requests=512, max_batch_tokens=16384, max_batch_requests=None, max_client_batch_size=32,
        auto_truncate=true, default_prompt=None, default_prompt_name=None, dense_path=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_dir: String,
        served_model_name: Option<String>,
        dtype: Option<String>,
        pooling: Option<String>,
        tokenization_workers: Option<usize>,
        max_concurrent_requests: usize,
        max_batch_tokens: usize,
        max_batch_requests: Option<usize>,
        max_client_batch_size: usize,
        auto_truncate: bool,
        default_prompt: Option<String>,
        default_prompt_name: Option<String>,
        dense_path: Option<String>,
    ) -> PyResult<Self> {
        let options = EngineOptions {
            model_dir,
            served_model_name,
            dtype,
            pooling,
            tokenization_workers,
            max_concurrent_requests,
            max_batch_tokens,
            max_batch_requests,
            max_client_batch_size,
            auto_truncate,
            default_prompt,
            default_prompt_name,
            dense_path,
        };
        let engine = py.allow_threads(|| Engine::load(options)).map_err(to_py)?;
        Ok(Self { engine: RwLock::new(Some(Arc::new(engine))) })
    }

    fn info(&self) -> PyResult<String> {
        Ok(self.engine()?.info_json())
    }

    fn health(&self, py: Python<'_>) -> PyResult<bool> {
        let engine = self.engine()?;
        py.allow_threads(|| engine.health()).map_err(to_py)
    }

    fn metrics(&self) -> PyResult<String> {
        self.engine()?.metrics().map_err(to_py)
    }

    /// (float32 bytes [n, dim], n, dim, timings)
    #[pyo3(signature = (items, *, truncate=None, truncation_direction=None, prompt_name=None, normalize=true, dimensions=None))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Bound<'py, PyAny>>,
        truncate: Option<bool>,
        truncation_direction: Option<&str>,
        prompt_name: Option<String>,
        normalize: bool,
        dimensions: Option<usize>,
    ) -> PyResult<(Bound<'py, PyBytes>, usize, usize, Vec<Timing>)> {
        let (engine, inputs, direction) = (self.engine()?, inputs(items)?, direction(truncation_direction)?);
        let results = py
            .allow_threads(|| engine.embed(inputs, truncate, direction, prompt_name, normalize, dimensions))
            .map_err(to_py)?;
        let dim = results.first().map_or(0, |r| r.value.len());
        let buffer = py.allow_threads(|| flat_f32(&results));
        Ok((PyBytes::new(py, &buffer), results.len(), dim, timings(&results)))
    }

    /// ([(uint32 index bytes, float32 value bytes)], timings)
    #[pyo3(signature = (items, *, truncate=None, truncation_direction=None, prompt_name=None))]
    fn embed_sparse<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Bound<'py, PyAny>>,
        truncate: Option<bool>,
        truncation_direction: Option<&str>,
        prompt_name: Option<String>,
    ) -> PyResult<(Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>, Vec<Timing>)> {
        let (engine, inputs, direction) = (self.engine()?, inputs(items)?, direction(truncation_direction)?);
        let results =
            py.allow_threads(|| engine.embed_sparse(inputs, truncate, direction, prompt_name)).map_err(to_py)?;
        let rows = results
            .iter()
            .map(|r| {
                let indices: Vec<u8> = r.value.iter().flat_map(|(i, _)| i.to_le_bytes()).collect();
                let values: Vec<u8> = r.value.iter().flat_map(|(_, v)| v.to_le_bytes()).collect();
                (PyBytes::new(py, &indices), PyBytes::new(py, &values))
            })
            .collect();
        Ok((rows, timings(&results)))
    }

    /// ([(float32 bytes [tokens, dim], tokens, dim)], timings)
    #[pyo3(signature = (items, *, truncate=None, truncation_direction=None, prompt_name=None))]
    fn embed_all<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Bound<'py, PyAny>>,
        truncate: Option<bool>,
        truncation_direction: Option<&str>,
        prompt_name: Option<String>,
    ) -> PyResult<(Vec<(Bound<'py, PyBytes>, usize, usize)>, Vec<Timing>)> {
        let (engine, inputs, direction) = (self.engine()?, inputs(items)?, direction(truncation_direction)?);
        let results =
            py.allow_threads(|| engine.embed_all(inputs, truncate, direction, prompt_name)).map_err(to_py)?;
        let rows = results
            .iter()
            .map(|r| {
                let dim = r.value.first().map_or(0, Vec::len);
                (f32_bytes(py, r.value.iter().map(Vec::as_slice)), r.value.len(), dim)
            })
            .collect();
        Ok((rows, timings(&results)))
    }

    /// (float32 bytes [n, labels], n, labels, timings)
    #[pyo3(signature = (items, *, truncate=None, truncation_direction=None, raw_scores=false))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Bound<'py, PyAny>>,
        truncate: Option<bool>,
        truncation_direction: Option<&str>,
        raw_scores: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, usize, usize, Vec<Timing>)> {
        let (engine, inputs, direction) = (self.engine()?, inputs(items)?, direction(truncation_direction)?);
        let results = py.allow_threads(|| engine.predict(inputs, truncate, direction, raw_scores)).map_err(to_py)?;
        let labels = results.first().map_or(0, |r| r.value.len());
        Ok((PyBytes::new(py, &flat_f32(&results)), results.len(), labels, timings(&results)))
    }

    /// [[(id, text, special, start, stop)]]
    #[pyo3(signature = (texts, *, add_special_tokens=true, prompt_name=None))]
    #[allow(clippy::type_complexity)]
    fn tokenize(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        add_special_tokens: bool,
        prompt_name: Option<String>,
    ) -> PyResult<Vec<Vec<(u32, String, bool, Option<usize>, Option<usize>)>>> {
        let engine = self.engine()?;
        let tokens = py.allow_threads(|| engine.tokenize(texts, add_special_tokens, prompt_name)).map_err(to_py)?;
        Ok(tokens
            .into_iter()
            .map(|row| row.into_iter().map(|t| (t.id, t.text, t.special, t.start, t.stop)).collect())
            .collect())
    }

    #[pyo3(signature = (ids, *, skip_special_tokens=true))]
    fn decode(&self, py: Python<'_>, ids: Vec<Vec<u32>>, skip_special_tokens: bool) -> PyResult<Vec<String>> {
        let engine = self.engine()?;
        py.allow_threads(|| engine.decode(ids, skip_special_tokens)).map_err(to_py)
    }

    /// Free the model (and GPU memory) once calls in flight return.
    fn close(&self, py: Python<'_>) {
        let engine = self.engine.write().expect("engine lock").take();
        py.allow_threads(move || drop(engine));
    }
}

/// What this extension was built from: pytei's build sets these in the build environment.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    info.set_item("version", env!("CARGO_PKG_VERSION"))?;
    info.set_item("fork_commit", option_env!("GIT_SHA"))?;
    info.set_item("build_id", option_env!("PYTEI_BUILD_ID"))?;
    info.set_item("features", option_env!("PYTEI_ENGINE_FEATURES"))?;
    Ok(info)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    Ok(())
}
