//! Chat prompts: a GGUF file's `tokenizer.chat_template` (Jinja, as Hugging Face writes them)
//! rendered with minijinja as Hugging Face's `apply_chat_template` renders them: blocks trimmed
//! (`trim_blocks`, `lstrip_blocks`), Python's string methods (`.strip()`, `.startswith()`,
//! ...), `raise_exception(message)`.

use std::collections::BTreeMap;

use minijinja::{Environment, ErrorKind, Value};

use crate::error::{Error, Result};

/// One chat message: `role`, `content` and any other string fields the template reads.
pub type ChatMessage = BTreeMap<String, String>;

/// Render `template` for `messages`, ending with the assistant's turn opened
/// (`add_generation_prompt`). Template errors are `InvalidArgument` with minijinja's message.
pub fn render_chat(
    template: &str,
    messages: &[ChatMessage],
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    for (i, m) in messages.iter().enumerate() {
        if !m.contains_key("role") || !m.contains_key("content") {
            return Err(Error::invalid(format!(
                "message {i} needs the keys \"role\" and \"content\", has {:?}",
                m.keys().collect::<Vec<_>>()
            )));
        }
    }
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    let err = |e: minijinja::Error| Error::invalid(format!("chat template: {e:#}"));
    env.add_template("chat", template).map_err(err)?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    env.get_template("chat")
        .map_err(err)?
        .render(ctx)
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        [
            ("role".to_string(), role.to_string()),
            ("content".to_string(), content.to_string()),
        ]
        .into()
    }

    #[test]
    fn chatml_with_python_methods() {
        let t = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render_chat(t, &[msg("user", "  hi  ")], "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_and_bad_messages() {
        let t = "{{ raise_exception('roles must alternate') }}";
        let e = render_chat(t, &[msg("user", "x")], "", "").unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
        let bad: ChatMessage = [("role".to_string(), "user".to_string())].into();
        assert!(matches!(
            render_chat("x", &[bad], "", ""),
            Err(Error::InvalidArgument(_))
        ));
    }
}
