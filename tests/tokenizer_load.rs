//! The tokenizer's tables are built on the first call that needs them, not
//! at start-up (an idle server stays small). This file is its own process,
//! so the tables start unbuilt: the first calls, arriving together, must
//! wait for one load and then count exactly as a preloaded server does.

mod common;

use agentstream::{pb, tokenizer::Tokenizer};
use common::{TestServer, ask, drain_ok, text_of};

#[tokio::test]
async fn first_calls_wait_for_one_lazy_load_and_count_exactly() {
    let server = TestServer::start_with(|c| c.preload_tokenizer = false).await;
    assert!(
        !Tokenizer::is_loaded(),
        "a server started on the defaults must not build the tables"
    );

    let question = "How many tokens is this, 请?";
    let calls = (0..3).map(|_| {
        let mut client = server.chat();
        async move {
            let request = pb::StreamChatRequest {
                include_usage: true,
                ..ask(question)
            };
            let mut stream = client
                .stream_chat(request)
                .await
                .expect("accepted")
                .into_inner();
            drain_ok(&mut stream).await
        }
    });
    let answers = futures::future::join_all(calls).await;

    assert!(Tokenizer::is_loaded(), "the first chat call builds them");
    let tokenizer = Tokenizer::cl100k();
    let expected_prompt = 3 + tokenizer.count("user") + tokenizer.count(question) + 3;
    for chunks in answers {
        let usage = chunks.last().and_then(|c| c.usage).expect("usage chunk");
        assert_eq!(usage.prompt_tokens as usize, expected_prompt);
        let text = text_of(&chunks, 0);
        assert!(
            text.contains(question),
            "echo restates the question: {text}"
        );
        assert_eq!(usage.completion_tokens as usize, tokenizer.count(&text));
    }
}
