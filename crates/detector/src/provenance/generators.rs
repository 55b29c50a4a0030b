//! Generator front-ends and the traces they leave in text metadata.

use lg_events::{Marker, MarkerKind};

use super::{marker, xmp::aigc_marker};

/// Names of image generators, as they appear in `Software`/`Make`/`Source` fields
/// (matched case-insensitively as substrings), with the canonical name reported.
const KNOWN_GENERATORS: &[(&str, &str)] = &[
    ("stable diffusion", "Stable Diffusion"),
    ("stablediffusion", "Stable Diffusion"),
    ("automatic1111", "AUTOMATIC1111"),
    ("comfyui", "ComfyUI"),
    ("invokeai", "InvokeAI"),
    ("novelai", "NovelAI"),
    ("fooocus", "Fooocus"),
    ("midjourney", "Midjourney"),
    ("dall-e", "DALL-E"),
    ("dall·e", "DALL-E"),
    ("dalle", "DALL-E"),
    ("openai", "OpenAI"),
    ("adobe firefly", "Adobe Firefly"),
    ("google imagen", "Google Imagen"),
    ("gemini image", "Google Gemini"),
    ("leonardo.ai", "Leonardo.Ai"),
    ("ideogram", "Ideogram"),
    ("flux.1", "FLUX"),
    ("black forest labs", "FLUX"),
    ("runwayml", "Runway"),
    ("kling ai", "Kling"),
    ("klingai", "Kling"),
    ("可灵", "Kling"),
    ("jimeng", "Jimeng"),
    ("即梦", "Jimeng"),
    ("doubao", "Doubao"),
    ("豆包", "Doubao"),
    ("tongyi wanxiang", "Tongyi Wanxiang"),
    ("通义万相", "Tongyi Wanxiang"),
    ("wenxin yige", "Wenxin Yige"),
    ("文心一格", "Wenxin Yige"),
    ("hunyuan", "Hunyuan"),
    ("混元", "Hunyuan"),
];

/// The canonical generator name when `value` names a known generator.
pub(crate) fn known_generator(value: &str) -> Option<&'static str> {
    let lower = value.to_lowercase();
    KNOWN_GENERATORS
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map(|(_, name)| *name)
}

/// A1111's plain-text parameter block: a prompt, then a line with `Steps: N, Sampler: ...`.
pub(crate) fn looks_like_a1111(text: &str) -> bool {
    text.contains("Steps: ") && (text.contains("Sampler: ") || text.contains("Seed: "))
}

/// Reads one PNG text chunk.
pub(crate) fn read_text_chunk(keyword: &str, text: &str, markers: &mut Vec<Marker>) {
    let params = |generator: &str| {
        marker(
            MarkerKind::GeneratorParameters,
            true,
            Some(generator.to_owned()),
            format!("PNG text chunk `{keyword}`: {text}"),
        )
    };
    match keyword {
        "parameters" => {
            let generator = if text.trim_start().starts_with('{') && text.contains("base_model") {
                "Fooocus"
            } else if looks_like_a1111(text) {
                "AUTOMATIC1111"
            } else {
                "Stable Diffusion web UI"
            };
            markers.push(params(generator));
        }
        "fooocus_scheme" => markers.push(params("Fooocus")),
        "prompt" | "workflow" if text.trim_start().starts_with('{') => {
            markers.push(params("ComfyUI"))
        }
        "invokeai_metadata" | "invokeai_graph" | "sd-metadata" | "Dream" => {
            markers.push(params("InvokeAI"))
        }
        "AIGC" | "TC260:AIGC" => {
            markers.push(aigc_marker(text, &format!("PNG text chunk `{keyword}`")))
        }
        "Software" | "Source" | "Comment" => {
            if let Some(g) = known_generator(text) {
                markers.push(marker(
                    MarkerKind::GeneratorParameters,
                    true,
                    Some(g.to_owned()),
                    format!("PNG text chunk `{keyword}`: {text}"),
                ));
            }
        }
        _ => {}
    }
}

/// Reads parameters hidden in the alpha channel.
pub(crate) fn read_stealth(text: &str, markers: &mut Vec<Marker>) {
    let generator = if looks_like_a1111(text) {
        "AUTOMATIC1111"
    } else {
        "Stable Diffusion web UI"
    };
    markers.push(marker(
        MarkerKind::GeneratorParameters,
        true,
        Some(generator.to_owned()),
        format!("stealth parameters in alpha-channel low bits: {text}"),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(keyword: &str, text: &str, expected: Option<&str>) {
        let mut m = Vec::new();
        read_text_chunk(keyword, text, &mut m);
        assert_eq!(
            m.first().and_then(|m| m.generator.as_deref()),
            expected,
            "{keyword}: {m:?}"
        );
        if expected.is_some() {
            assert!(m[0].declares_ai);
        }
    }

    #[test]
    fn table() {
        check(
            "parameters",
            "a duck\nNegative prompt: x\nSteps: 15, Sampler: UniPC, Seed: 1",
            Some("AUTOMATIC1111"),
        );
        check(
            "parameters",
            r#"{"base_model": "juggernautXL", "prompt": "x"}"#,
            Some("Fooocus"),
        );
        check("prompt", r#"{"3": {"inputs": {}}}"#, Some("ComfyUI"));
        check("prompt", "just a caption", None);
        check("workflow", r#"{"nodes": []}"#, Some("ComfyUI"));
        check("invokeai_metadata", "{}", Some("InvokeAI"));
        check("Dream", "\"a photo\" -s 50", Some("InvokeAI"));
        check("Software", "NovelAI", Some("NovelAI"));
        check("Software", "Adobe Photoshop 25.0", None);
        check(
            "Source",
            "Stable Diffusion 1D44365E",
            Some("Stable Diffusion"),
        );
        check("Title", "AI generated image", None);
        check(
            "AIGC",
            r#"{"Label":"1","ContentProducer":"acme"}"#,
            Some("acme"),
        );
        check("date:create", "2025-01-01", None);
    }

    #[test]
    fn generators() {
        assert_eq!(known_generator("Made with DALL·E 3"), Some("DALL-E"));
        assert_eq!(known_generator("即梦AI"), Some("Jimeng"));
        assert_eq!(known_generator("Canon EOS R5"), None);
        assert_eq!(known_generator("Sparkling Photo Editor"), None);
    }
}
