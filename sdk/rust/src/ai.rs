//! The model, through the node's AI adapter. The app never sees a key.

/// What to ask the model.
#[derive(Debug, Clone)]
pub struct Request {
    /// The user prompt.
    pub prompt: String,
    /// An optional system prompt.
    pub system: Option<String>,
    /// An optional cap on output tokens.
    pub max_tokens: Option<u32>,
}

impl Request {
    /// A request with just a prompt.
    pub fn new(prompt: impl Into<String>) -> Self {
        Request {
            prompt: prompt.into(),
            system: None,
            max_tokens: None,
        }
    }

    /// The `ai_generate` request of the contract ([`aisa_abi::AiRequest`]).
    fn to_json(&self) -> String {
        serde_json::to_string(&aisa_abi::AiRequest {
            prompt: self.prompt.clone(),
            system: self.system.clone(),
            max_tokens: self.max_tokens,
        })
        .unwrap_or_default()
    }
}

/// The model's answer as it streams: each item is the next piece of text.
pub struct Generation {
    #[cfg(target_arch = "wasm32")]
    handle: i32,
    #[cfg(target_arch = "wasm32")]
    buf: Vec<u8>,
    #[cfg(not(target_arch = "wasm32"))]
    pieces: std::vec::IntoIter<String>,
}

/// Starts a generation.
pub fn generate(request: &Request) -> Result<Generation, String> {
    let json = request.to_json();
    #[cfg(target_arch = "wasm32")]
    {
        #[allow(unsafe_code)]
        // SAFETY: the pointer and length describe `json`, valid for the call.
        let handle = unsafe { super::host::ai_generate(json.as_ptr(), json.len()) };
        if handle < 0 {
            return Err("the model could not be asked".into());
        }
        Ok(Generation {
            handle,
            buf: vec![0; 4096],
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = json;
        let reply = super::testing::MODEL_REPLY.with(|r| r.borrow().clone());
        let pieces = reply.ok_or("no model on this target: call testing::set_model_reply")?;
        Ok(Generation {
            pieces: pieces.into_iter(),
        })
    }
}

impl Iterator for Generation {
    type Item = Result<String, String>;

    fn next(&mut self) -> Option<Self::Item> {
        #[cfg(target_arch = "wasm32")]
        {
            #[allow(unsafe_code)]
            // SAFETY: `buf` is writable for `buf.len()` bytes during the call.
            let n =
                unsafe { super::host::ai_next(self.handle, self.buf.as_mut_ptr(), self.buf.len()) };
            match n {
                0 => None,
                n if n < 0 => Some(Err("the model stream failed".into())),
                n => Some(
                    std::str::from_utf8(&self.buf[..n as usize])
                        .map(str::to_owned)
                        .map_err(|_| "the model sent invalid UTF-8".to_owned()),
                ),
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.pieces.next().map(Ok)
    }
}
