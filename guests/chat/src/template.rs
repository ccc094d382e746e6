//! Rendering a model's chat template into the prompt text.
//!
//! Chat models are trained on one exact conversation format; the GGUF ships
//! it as a Jinja template written for Hugging Face `transformers`. To render
//! such templates the same way, the environment mirrors what `transformers`
//! sets up: `trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension
//! (`break`/`continue`), a `raise_exception` function, Python string and dict
//! methods (`.strip()`, `.startswith()`, `.items()`, via `minijinja-contrib`'s
//! pycompat), and the variables `messages`, `add_generation_prompt`,
//! `bos_token` and `eos_token`.

use crate::request::Message;
use minijinja::syntax::SyntaxConfig;
use minijinja::{context, Environment, Error, ErrorKind, Value};
use std::sync::{Arc, Mutex};

/// Used when the model has no template: ChatML (`<|im_start|>role\n…<|im_end|>`)
/// is the most common format among small instruct models, so it is the best
/// guess, but a model trained on another format will answer poorly with it.
pub const CHATML: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Why a prompt could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template called `raise_exception`: it rejects this conversation
    /// (for instance roles that do not alternate). The client must change
    /// its messages, so this is a 400.
    Rejected(String),
    /// The template itself failed (syntax, unsupported feature): a 500.
    Failed(String),
}

/// Renders `template` (or [`CHATML`] when `None`) for `messages`, always
/// with `add_generation_prompt = true`: the prompt asks for the assistant's
/// next turn.
pub fn render(
    template: Option<&str>,
    messages: &[Message],
    bos_token: &str,
    eos_token: &str,
) -> Result<String, TemplateError> {
    let source = template.unwrap_or(CHATML);
    let raised: Arc<Mutex<Option<String>>> = Arc::default();

    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| TemplateError::Failed(e.to_string()))?;
    env.set_syntax(syntax);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    let sink = Arc::clone(&raised);
    env.add_function(
        "raise_exception",
        move |message: String| -> Result<Value, Error> {
            if let Ok(mut slot) = sink.lock() {
                *slot = Some(message.clone());
            }
            Err(Error::new(ErrorKind::InvalidOperation, message))
        },
    );

    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            context! {
                // OpenAI's `developer` role is the newer name for `system`;
                // chat templates only know the latter.
                role => match m.role {
                    crate::request::Role::Developer => "system",
                    _ => m.role.as_str(),
                },
                content => m.content.as_str(),
            }
        })
        .collect();
    let ctx = context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    };

    env.render_str(source, ctx).map_err(|e| {
        match raised.lock().ok().and_then(|mut slot| slot.take()) {
            Some(message) => TemplateError::Rejected(message),
            None => TemplateError::Failed(format!("chat template failed: {e}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Role;

    /// SmolLM2-135M-Instruct's `tokenizer.chat_template`, with the real
    /// newlines the GGUF has inside its string literals.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
        }
    }

    #[test]
    fn smollm2_one_user_message() {
        let out = render(
            Some(SMOLLM2),
            &[msg(Role::User, "What is the capital of France?")],
            "<|im_start|>",
            "<|im_end|>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn developer_messages_render_as_system() {
        let out = render(
            Some(SMOLLM2),
            &[msg(Role::Developer, "be brief"), msg(Role::User, "hi")],
            "",
            "",
        )
        .unwrap();
        assert!(
            out.starts_with("<|im_start|>system\nbe brief<|im_end|>\n"),
            "{out}"
        );
    }

    #[test]
    fn smollm2_with_system_message_skips_default() {
        let out = render(
            Some(SMOLLM2),
            &[msg(Role::System, "Be terse."), msg(Role::User, "Hi")],
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_fallback() {
        let out = render(
            None,
            &[msg(Role::User, "Hi"), msg(Role::Assistant, "Hello")],
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_a_rejection() {
        let t = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('need a system message') }}{% endif %}ok";
        let err = render(Some(t), &[msg(Role::User, "x")], "", "").unwrap_err();
        assert_eq!(err, TemplateError::Rejected("need a system message".into()));
    }

    #[test]
    fn broken_template_is_a_failure() {
        let err = render(Some("{% for %}"), &[msg(Role::User, "x")], "", "").unwrap_err();
        assert!(matches!(err, TemplateError::Failed(_)), "{err:?}");
    }

    #[test]
    fn hf_style_features_work() {
        // trim_blocks/lstrip_blocks, loop controls, namespace, pycompat
        // string methods, bos_token, tojson. The expected string is what
        // Python's jinja2 3.1 renders with transformers' settings.
        let t = "{{ bos_token }}
{%- set ns = namespace(n=0) %}
{% for message in messages %}
    {% if message.role == 'system' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
[{{ message['role'] | upper }}] {{ message['content'].strip() }}{% if message.content.startswith('stop') %}{% break %}{% endif %}
{% endfor %}
{{ ns.n }} {{ messages[0] | tojson }}";
        let out = render(
            Some(t),
            &[
                msg(Role::System, "sys"),
                msg(Role::User, "  hi  "),
                msg(Role::Assistant, "stop here"),
                msg(Role::User, "never"),
            ],
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<s>[USER] hi[ASSISTANT] stop here2 {\"role\": \"system\", \"content\": \"sys\"}"
        );
    }
}
