%% Re-attaches the Raft servers of quorum queues that RabbitMQ 3.10 (Ra 2.2)
%% lost in an unclean stop, keeping their messages. Run by the local runner
%% (xtask/src/infra.rs, RabbitMq::repair_quorum_queues) after every start of
%% its own RabbitMQ; how the defect was found: docs/broker-notes.md.
%%
%% Ra writes a new server's name -> directory registration to names.dets
%% without forcing it to disk; a node SIGKILLed within about a second of a
%% quorum queue's declaration loses it, and at the next start RabbitMQ makes
%% an empty server under a new directory that, alone on one node, never holds
%% an election. The queue's log is still on disk under the old directory.
%%
%% For each quorum queue with a member here whose current server is such a
%% brand-new one (no leader, log index 0, term 0) while a directory of an
%% earlier server of the same queue exists: delete the empty server, start the
%% old one from its config, and force the registration to disk. Idempotent;
%% returns [{Queue, Outcome}] for the queues it touched ([] when none).
fun() ->
  Sys = quorum_queues,
  #{data_dir := DataDir, names := #{directory_rev := DirRev}} = ra_system:fetch(Sys),
  DirSize = fun(Dir) -> lists:sum([filelib:file_size(F) || F <- filelib:wildcard(filename:join(Dir, "**/*")),
                                   filelib:is_regular(F), filename:basename(F) =/= "config"]) end,
  Configs = [{filename:dirname(F), C} || F <- filelib:wildcard(filename:join(DataDir, "*/config")),
                                         {ok, [C]} <- [file:consult(F)], is_map(C)],
  Fix = fun(Q) ->
    {RaName, _} = amqqueue:get_pid(Q),
    ServerId = {RaName, node()},
    CurUId = ra_directory:uid_of(Sys, RaName),
    Orphans = lists:sort([{DirSize(Dir), filelib:last_modified(Dir), maps:get(uid, C), C}
                          || {Dir, C} <- Configs, maps:get(id, C, undefined) =:= ServerId,
                             maps:get(uid, C, undefined) =/= CurUId]),
    case Orphans of
      [] -> ok;
      _ ->
        %% the local member must be a brand-new Ra server: never had a log entry nor a term
        Local = [M || M <- rabbit_quorum_queue:status(amqqueue:get_vhost(Q), element(4, amqqueue:get_name(Q))),
                      proplists:get_value(<<"Node Name">>, M) =:= node()],
        IsNew = case Local of
                  [M1] -> {proplists:get_value(<<"Log Index">>, M1), proplists:get_value(<<"Term">>, M1)} =:= {0, 0};
                  _ -> false
                end,
        case {catch ra:members(ServerId, 2000), IsNew} of
          {{ok, _, _}, _} -> {skipped, has_leader, orphans, [U || {_, _, U, _} <- Orphans]};
          {_, false} -> {skipped, local_member_not_new, CurUId, Local};
          {_, true} ->
            {Bytes, _, OldUId, OldCfg} = lists:last(Orphans),
            Del = case CurUId of undefined -> not_registered; _ -> ra:force_delete_server(Sys, ServerId) end,
            Start = ra:start_server(Sys, maps:remove(system_config, OldCfg)),
            ok = dets:sync(DirRev),
            {reattached, #{deleted_empty_uid => {CurUId, Del}, restarted_uid => OldUId,
                           orphan_bytes => Bytes, start => Start}}
        end
    end
  end,
  Res = [{amqqueue:get_name(Q), catch Fix(Q)}
         || Q <- rabbit_amqqueue:list(), amqqueue:get_type(Q) =:= rabbit_quorum_queue,
            lists:member(node(), maps:get(nodes, amqqueue:get_type_state(Q), []))],
  [{rabbit_misc:rs(N), R} || {N, R} <- Res, R =/= ok]
end().
