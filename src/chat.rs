//! Chat prompts: a GGUF file's `tokenizer.chat_template` (Jinja, as Hugging Face writes them)
//! rendered with minijinja as Hugging Face's `apply_chat_template` renders them: blocks trimmed
//! (`trim_blocks`, `lstrip_blocks`), Python's string methods (`.strip()`, `.startswith()`,
//! ...), `raise_exception(message)`.

use std::collections::BTreeMap;

use minijinja::{Environment, ErrorKind, Value};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Gemma's chat format (Google's template for Gemma 3, text only): a system message opens
/// the first user turn, the assistant's role is `model`, roles alternate.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
";

/// Phi-3's chat format (as llama.cpp's built-in `phi3` template writes it): each message
/// `<|role|>\n` content `<|end|>\n`, then `<|assistant|>\n`.
pub const PHI3_TEMPLATE: &str = "{%- for message in messages -%}
    {{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<|assistant|>\n' }}
{%- endif -%}
";

/// The chat template of a family whose files may come without one (Gemma 3 files made by
/// llama.cpp's converter from the base model have none; llama.cpp also knows Phi-3's).
pub fn family_template(arch: crate::model::Arch) -> Option<&'static str> {
    match arch {
        crate::model::Arch::Gemma3 => Some(GEMMA_TEMPLATE),
        crate::model::Arch::Phi3 => Some(PHI3_TEMPLATE),
        _ => None,
    }
}

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

/// The prompt text for `messages` with `template` (the assistant's turn opened), and the
/// `add_bos` to tokenize it with: templates that write the BOS token themselves must not get
/// a second one. `bos_token` and `eos_token` are the tokenizer's, as text.
pub fn chat_prompt(
    template: &str,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
) -> Result<(String, Option<bool>)> {
    let text_of = |id: Option<u32>| id.map(|id| tokenizer.decode_with(&[id], true)).transpose();
    let bos = text_of(tokenizer.bos())?.unwrap_or_default();
    let eos = text_of(tokenizer.eos())?.unwrap_or_default();
    let prompt = render_chat(template, messages, &bos, &eos)?;
    let add_bos = (!bos.is_empty() && prompt.starts_with(&bos)).then_some(false);
    Ok((prompt, add_bos))
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
    fn gemma_template() {
        let out = render_chat(
            GEMMA_TEMPLATE,
            &[
                msg("system", "Be brief."),
                msg("user", " Hi "),
                msg("assistant", "Hello."),
                msg("user", "Why?"),
            ],
            "<bos>",
            "<eos>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
        let e = render_chat(GEMMA_TEMPLATE, &[msg("assistant", "x")], "", "").unwrap_err();
        assert!(e.to_string().contains("alternate"), "{e}");
    }

    #[test]
    fn phi3_template() {
        let messages = [
            msg("system", "Be brief."),
            msg("user", " Hi "),
            msg("assistant", "Hello."),
            msg("user", "Why?"),
        ];
        let out = render_chat(PHI3_TEMPLATE, &messages, "<s>", "<|endoftext|>").unwrap();
        assert_eq!(
            out,
            "<|system|>\nBe brief.<|end|>\n<|user|>\n Hi <|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nWhy?<|end|>\n<|assistant|>\n"
        );
        assert_eq!(
            family_template(crate::model::Arch::Phi3),
            Some(PHI3_TEMPLATE)
        );
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
