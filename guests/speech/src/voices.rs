//! Which installed voice a request means.
//!
//! Every speech model the host serves is a voice. Clients written for OpenAI
//! send one of OpenAI's voice names and a model such as `tts-1`; those map to
//! installed voices so that unchanged client code works.

use sandpiper_guest_sdk::ApiError;

/// OpenAI's voice names, in the order they map onto installed voices.
pub const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
    "marin", "cedar",
];

/// OpenAI's speech model names, accepted as "any installed voice".
pub const OPENAI_MODELS: &[&str] = &["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];

/// The installed voice for a request's `model` and `voice`.
///
/// `voice` may name an installed voice, or an OpenAI voice name (mapped in
/// order onto the installed voices, or onto `model` when that names one). If
/// `voice` is absent, `model` if it is a voice, else the first voice.
pub fn resolve(
    installed: &[String],
    model: Option<&str>,
    voice: Option<&str>,
) -> Result<String, ApiError> {
    if installed.is_empty() {
        return Err(
            ApiError::invalid_request("This server has no speech voices installed.")
                .with_status(404)
                .with_code("model_not_found"),
        );
    }
    let find = |name: &str| {
        installed
            .iter()
            .find(|v| v.eq_ignore_ascii_case(name))
            .cloned()
    };
    let model_voice = match model {
        None => None,
        Some(m) if OPENAI_MODELS.contains(&m) => None,
        Some(m) => Some(find(m).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "The model `{m}` is not a speech model here. Use one of: {}.",
                listing(installed, OPENAI_MODELS)
            ))
            .with_param("model")
            .with_code("model_not_found")
        })?),
    };
    match voice {
        None => Ok(model_voice.unwrap_or_else(|| installed[0].clone())),
        Some(v) => {
            if let Some(found) = find(v) {
                return Ok(found);
            }
            let lower = v.to_ascii_lowercase();
            match OPENAI_VOICES.iter().position(|o| *o == lower) {
                Some(_) if model_voice.is_some() => Ok(model_voice.unwrap()),
                Some(i) => Ok(installed[i % installed.len()].clone()),
                None => Err(ApiError::invalid_request(format!(
                    "Unknown voice `{v}`. Available voices: {} (OpenAI's voice names {} map to them).",
                    installed.join(", "),
                    OPENAI_VOICES.join(", ")
                ))
                .with_param("voice")
                .with_code("invalid_value")),
            }
        }
    }
}

fn listing(a: &[String], b: &[&str]) -> String {
    a.iter()
        .map(String::as_str)
        .chain(b.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which installed voice each OpenAI voice name maps to.
pub fn openai_mapping(installed: &[String]) -> Vec<(&'static str, String)> {
    if installed.is_empty() {
        return Vec::new();
    }
    OPENAI_VOICES
        .iter()
        .enumerate()
        .map(|(i, o)| (*o, installed[i % installed.len()].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voices() -> Vec<String> {
        vec!["en_US-joe-medium".into(), "en_GB-alan-low".into()]
    }

    #[test]
    fn resolves_installed_and_openai_names() {
        let v = voices();
        assert_eq!(resolve(&v, None, None).unwrap(), "en_US-joe-medium");
        assert_eq!(
            resolve(&v, Some("tts-1"), Some("en_gb-alan-low")).unwrap(),
            "en_GB-alan-low"
        );
        assert_eq!(
            resolve(&v, Some("tts-1"), Some("alloy")).unwrap(),
            "en_US-joe-medium"
        );
        assert_eq!(
            resolve(&v, Some("tts-1-hd"), Some("ash")).unwrap(),
            "en_GB-alan-low"
        );
        assert_eq!(
            resolve(&v, Some("en_GB-alan-low"), Some("alloy")).unwrap(),
            "en_GB-alan-low"
        );
        assert_eq!(
            resolve(&v, Some("en_GB-alan-low"), None).unwrap(),
            "en_GB-alan-low"
        );
    }

    #[test]
    fn unknown_names_are_400s_that_list_choices() {
        let v = voices();
        let e = resolve(&v, None, Some("robot")).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("voice")));
        assert!(e.message.contains("en_US-joe-medium") && e.message.contains("alloy"));
        let e = resolve(&v, Some("smollm2"), Some("alloy")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert_eq!(resolve(&[], None, None).unwrap_err().status, 404);
    }
}
